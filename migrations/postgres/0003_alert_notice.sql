-- What became of an alert's notifications (see migrations/0010_alert_notice.sql).
ALTER TABLE alerts ADD COLUMN notice TEXT;
