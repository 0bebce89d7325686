-- The catalogue. Each listing order has an index whose key order is the order served, with the
-- id as the tie-breaker, so every page is a range scan that stops after take + 1 rows.
CREATE TABLE IF NOT EXISTS products (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    name VARCHAR(255) NOT NULL,
    description TEXT NOT NULL,
    price DECIMAL(12,2) NOT NULL,
    category VARCHAR(64) NOT NULL,
    created_at DATETIME(6) NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    external_id VARCHAR(64) NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_products_external_id (external_id),
    KEY idx_products_created (created_at, id),
    KEY idx_products_price (price, id),
    KEY idx_products_category_created (category, created_at, id),
    KEY idx_products_category_price (category, price, id),
    FULLTEXT KEY ft_products_name_description (name, description)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
