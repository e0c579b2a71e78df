-- Operator roles (viewer | operator | admin; `admin/roles.rs`). Tokens and
-- certificates made before roles existed keep doing everything: admin.
ALTER TABLE admin_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE admin_certs ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
