-- Admin client certificates issued by `admin-cert create`. Over `http_tls`
-- a certificate authenticates only while its serial is here and not
-- revoked: certificates issued before this table existed have no row and
-- are refused (issue new ones with `admin-cert create`).
CREATE TABLE admin_certs (
    serial      TEXT PRIMARY KEY,   -- lower-case hex, no separators
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    not_after   INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX admin_certs_name ON admin_certs(name);
