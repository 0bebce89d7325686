-- Each product carries a 64-bit signature of its word starts (`domain::signature`), and the
-- four sort indexes carry it last (after the columns that give their order, so the order is
-- unchanged): a search walk tests `search_signature & mask = mask` on the index entry (index
-- condition pushdown, in MySQL 8 and MariaDB) and reads from the table only the rows that may
-- match, instead of every row of its window (issue 5, target 3).
--
-- The default, every bit set, passes every search: rows written before this migration stay
-- correct, and `serve` (at start-up, in the background) and `seed` sign them
-- (`store::signatures`). One ALTER, valid on MySQL 8 and MariaDB; each index keeps its name, so
-- `FORCE INDEX` hints and `HANDLER … READ` index names are unchanged.
ALTER TABLE products
    ADD COLUMN search_signature BIGINT UNSIGNED NOT NULL DEFAULT 18446744073709551615,
    DROP INDEX idx_products_created,
    ADD INDEX idx_products_created (created_at, id, price, search_signature),
    DROP INDEX idx_products_category_created,
    ADD INDEX idx_products_category_created (category, created_at, id, price, search_signature),
    DROP INDEX idx_products_price,
    ADD INDEX idx_products_price (price, id, created_at, search_signature),
    DROP INDEX idx_products_category_price,
    ADD INDEX idx_products_category_price (category, price, id, created_at, search_signature);
