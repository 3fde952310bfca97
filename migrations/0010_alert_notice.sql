-- What became of an alert's notifications (issue 13): "sent to Slack, webhook", "Slack failed:
-- HTTP 500 after 3 tries", "no receiver configured". NULL while none was due or sent yet.
ALTER TABLE alerts ADD COLUMN notice TEXT;
