-- Renewal is bound to the agent's current certificate. `cert_serial` is the
-- certificate the agent is known to hold; `pending_cert_serial` the one the
-- last renewal issued, until the agent confirms it (ConfirmCertificate, or a
-- Session opened with it). Then it becomes `cert_serial` and the replaced
-- certificate is refused for renewal and sessions.
ALTER TABLE agents ADD COLUMN pending_cert_serial TEXT;
