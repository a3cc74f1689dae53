"""Notification channels: Slack (slack-sdk) and email (SMTP), each behind `sync.notify.Sender`."""
