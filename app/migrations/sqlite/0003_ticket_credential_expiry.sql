-- A stream ticket minted with an expiring credential (a JWT signed with
-- LIVEFEED_TOKEN_SECRET) must not outlive it: the stream it opens is closed
-- when the credential expires.  Unix seconds; NULL for a credential that does
-- not expire (the static read or publish token).
ALTER TABLE stream_tickets ADD COLUMN credential_expires_at REAL;
