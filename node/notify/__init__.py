"""Notifications of warnings: channels (log, webhook, SMTP, SMS gateway), routing, and the retrying dispatcher."""
