"""One module per transport; each opens a :class:`~app.client.transports.base.Connection`."""
