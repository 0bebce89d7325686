-- The primary's heartbeat: one row whose beat_at an instance with read replicas moves to the
-- primary's UTC_TIMESTAMP(6) every REPLICA_CHECK_INTERVAL_MS. A replica's copy of the row,
-- compared with the primary's clock, is how far behind that replica is (its lag), measured
-- on one clock; Seconds_Behind_Master alone cannot prove what a replica has applied.
CREATE TABLE IF NOT EXISTS replication_heartbeat (
    id TINYINT UNSIGNED NOT NULL,
    beat_at DATETIME(6) NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB;

INSERT IGNORE INTO replication_heartbeat (id, beat_at) VALUES (1, UTC_TIMESTAMP(6));
