-- Webhook event ids: the durable exactly-once record, written in the same transaction as the
-- product change it caused. Kept at least 72 hours (senders retry for days);
-- nothing purges them yet.
CREATE TABLE IF NOT EXISTS webhook_events (
    event_id VARCHAR(255) NOT NULL,
    event_type VARCHAR(32) NOT NULL,
    received_at DATETIME(6) NOT NULL,
    PRIMARY KEY (event_id),
    KEY idx_webhook_events_received (received_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The newest change applied to each external product, kept after a delete (a tombstone), so an
-- older event arriving late changes nothing and cannot resurrect a deleted product.
CREATE TABLE IF NOT EXISTS external_versions (
    external_id VARCHAR(64) NOT NULL,
    last_change_at DATETIME(6) NOT NULL,
    deleted TINYINT(1) NOT NULL DEFAULT 0,
    PRIMARY KEY (external_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Who may run the catalogue sync: a lease with a fencing generation. Every write of a sync run
-- checks that the lease still carries its generation, so a paused holder that lost the lease
-- cannot write.
CREATE TABLE IF NOT EXISTS sync_lease (
    name VARCHAR(64) NOT NULL,
    holder VARCHAR(64) NOT NULL,
    generation BIGINT UNSIGNED NOT NULL,
    expires_at DATETIME(6) NOT NULL,
    next_skip BIGINT UNSIGNED NOT NULL DEFAULT 0,
    PRIMARY KEY (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
