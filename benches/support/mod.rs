//! What the bench targets share: pages of seed products, as the store returns them.

use product_api::domain::{Page, Product};

/// `count` seed products with more behind them (a first page).
#[must_use]
pub fn page_of(count: u64) -> Page {
    let products = (0..count)
        .map(|id| {
            let row = product_api::seed::product(id);
            Product {
                id: id + 1,
                name: row.name,
                description: row.description,
                price: row.price,
                category: row.category.to_owned(),
                created_at: row.created_at,
                updated_at: row.updated_at,
            }
        })
        .collect();
    Page {
        products,
        has_more: true,
    }
}
