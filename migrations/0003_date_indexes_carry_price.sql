-- The date-ordered indexes also carry the price (after the id, so their order stays the
-- listing's order): a price band served in date order is then filtered on the index alone, and
-- only the rows of the page are read from the table (issue 5; `store::sql::Band`). One ALTER
-- per table, valid on MySQL 8 and MariaDB; each index keeps its name, so `FORCE INDEX` hints
-- are unchanged.
ALTER TABLE products
    DROP INDEX idx_products_created,
    ADD INDEX idx_products_created (created_at, id, price),
    DROP INDEX idx_products_category_created,
    ADD INDEX idx_products_category_created (category, created_at, id, price);
