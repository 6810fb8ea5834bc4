"""Who may connect and from where: hosts, origins, credentials, tickets, admission."""
