-- How long a runner waited for its image: NULL until its container runs,
-- 0 when the image was already on the host, else the milliseconds the
-- agent spent pulling it (shown as "cold pull 12.3 s").
ALTER TABLE runners ADD COLUMN image_pull_ms INTEGER;
