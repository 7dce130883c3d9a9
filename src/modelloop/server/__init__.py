"""The control-plane server: the store, registry and artifacts over HTTP, with users, roles and
an audit log (``modelloop server``)."""
