//! The catalog: the items that can be recommended, each with an id, a title and a category. Fixed once built;
//! interactions arrive later and only refer to it.
//!
//! Items are addressed inside the crate by a dense [`ItemIdx`] (their position in the catalog), so per-item figures
//! are plain vectors. Ties between equally scored items are broken by id everywhere, through
//! [`Catalog::id_rank`], so every answer is deterministic whatever order the catalog was written in.

use foldhash::HashMap;

use serde::{Deserialize, Serialize};

use crate::validate::{self, FieldError};

/// A catalog item, as written in `DATA_FILE` and served by the data agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"id": "books-001", "title": "Harbor Chronicles", "category": "books"})))]
pub struct Item {
    /// Unique id, matching [`validate::ID_PATTERN`].
    pub id: String,
    /// What people see.
    pub title: String,
    /// The item's one category.
    pub category: String,
}

/// Position of an item in its catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemIdx(pub(crate) u32);

impl ItemIdx {
    /// The position as an index into per-item vectors.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Position of a category in its catalog (in order of first appearance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CategoryIdx(pub(crate) u32);

impl CategoryIdx {
    /// The position as an index into per-category vectors.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Why an item cannot join the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// A field breaks its rule.
    #[error("`{field}` {error}")]
    Field {
        /// `id`, `title` or `category`.
        field: &'static str,
        /// The rule broken.
        error: FieldError,
    },
    /// The id is already taken.
    #[error("item `{id}` is defined twice")]
    Duplicate {
        /// The id.
        id: String,
        /// The item that has it already.
        first: ItemIdx,
    },
    /// More items than an [`ItemIdx`] can address.
    #[error("too many items")]
    Full,
}

/// The items and their indexes by id and category: what the builder collects and the catalog keeps.
#[derive(Debug, Clone, Default, PartialEq)]
struct Entries {
    items: Vec<Item>,
    by_id: HashMap<String, ItemIdx>,
    categories: Vec<String>,
    category_by_name: HashMap<String, CategoryIdx>,
    category_of: Vec<CategoryIdx>,
}

/// Builds a catalog one item at a time, checking each as it comes.
#[derive(Debug, Default)]
pub struct CatalogBuilder(Entries);

impl CatalogBuilder {
    /// Adds `item` if its fields are valid and its id is new.
    pub fn push(&mut self, item: Item) -> Result<ItemIdx, CatalogError> {
        let field =
            |field, result: Result<(), FieldError>| result.map_err(|error| CatalogError::Field { field, error });
        field("id", validate::id(&item.id))?;
        field("title", validate::title(&item.title))?;
        field("category", validate::category(&item.category))?;
        let entries = &mut self.0;
        if let Some(&first) = entries.by_id.get(&item.id) {
            return Err(CatalogError::Duplicate { id: item.id, first });
        }
        let idx = ItemIdx(u32::try_from(entries.items.len()).map_err(|_| CatalogError::Full)?);
        let category = match entries.category_by_name.get(&item.category) {
            Some(&category) => category,
            None => {
                // At most one category per item, so this cannot overflow once the item index did not.
                let category = CategoryIdx(entries.categories.len() as u32);
                entries.categories.push(item.category.clone());
                entries.category_by_name.insert(item.category.clone(), category);
                category
            }
        };
        entries.by_id.insert(item.id.clone(), idx);
        entries.category_of.push(category);
        entries.items.push(item);
        Ok(idx)
    }

    /// The item with this id, if pushed already.
    pub fn get(&self, id: &str) -> Option<ItemIdx> {
        self.0.by_id.get(id).copied()
    }

    /// Number of items pushed.
    pub fn len(&self) -> usize {
        self.0.items.len()
    }

    /// Whether no item was pushed.
    pub fn is_empty(&self) -> bool {
        self.0.items.is_empty()
    }

    /// The finished catalog.
    pub fn build(self) -> Catalog {
        let entries = self.0;
        let mut by_rank: Vec<u32> = (0..entries.items.len() as u32).collect();
        by_rank.sort_unstable_by(|&a, &b| entries.items[a as usize].id.cmp(&entries.items[b as usize].id));
        let mut id_rank = vec![0; entries.items.len()];
        for (rank, &idx) in by_rank.iter().enumerate() {
            id_rank[idx as usize] = rank as u32;
        }
        let mut in_category = vec![Vec::new(); entries.categories.len()];
        for (idx, category) in entries.category_of.iter().enumerate() {
            in_category[category.index()].push(ItemIdx(idx as u32));
        }
        Catalog { entries, in_category, id_rank }
    }
}

/// The items, indexed by id and by category.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    entries: Entries,
    in_category: Vec<Vec<ItemIdx>>,
    id_rank: Vec<u32>,
}

impl Catalog {
    /// A catalog of `items`, checked as [`CatalogBuilder::push`] does; the error names the item's position.
    pub fn new(items: impl IntoIterator<Item = Item>) -> Result<Self, (usize, CatalogError)> {
        let mut builder = CatalogBuilder::default();
        for (position, item) in items.into_iter().enumerate() {
            builder.push(item).map_err(|err| (position, err))?;
        }
        Ok(builder.build())
    }

    /// Every item, in catalog order.
    pub fn items(&self) -> &[Item] {
        &self.entries.items
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.entries.items.len()
    }

    /// Whether the catalog has no item.
    pub fn is_empty(&self) -> bool {
        self.entries.items.is_empty()
    }

    /// The item at `idx`.
    pub fn item(&self, idx: ItemIdx) -> &Item {
        &self.entries.items[idx.index()]
    }

    /// The item with this id.
    pub fn find(&self, id: &str) -> Option<ItemIdx> {
        self.entries.by_id.get(id).copied()
    }

    /// Every category name, in order of first appearance.
    pub fn categories(&self) -> &[String] {
        &self.entries.categories
    }

    /// The category with this name.
    pub fn find_category(&self, name: &str) -> Option<CategoryIdx> {
        self.entries.category_by_name.get(name).copied()
    }

    /// The category of an item.
    pub fn category_of(&self, idx: ItemIdx) -> CategoryIdx {
        self.entries.category_of[idx.index()]
    }

    /// The items of a category, in catalog order.
    pub fn items_in(&self, category: CategoryIdx) -> &[ItemIdx] {
        &self.in_category[category.index()]
    }

    /// The item's position when all ids are sorted: the tie-breaker between equal scores (lower id first).
    pub fn id_rank(&self, idx: ItemIdx) -> u32 {
        self.id_rank[idx.index()]
    }

    /// Iterates over every item index.
    pub fn indices(&self) -> impl Iterator<Item = ItemIdx> + '_ {
        (0..self.entries.items.len() as u32).map(ItemIdx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, category: &str) -> Item {
        Item { id: id.to_owned(), title: format!("Title of {id}"), category: category.to_owned() }
    }

    #[test]
    fn indexes_items_by_id_category_and_id_order() {
        let catalog = Catalog::new([item("b", "books"), item("a", "music"), item("c", "books")]).unwrap();
        let b = catalog.find("b").unwrap();
        assert_eq!(catalog.item(b).id, "b");
        assert_eq!(catalog.categories(), ["books", "music"]);
        let books = catalog.find_category("books").unwrap();
        assert_eq!(catalog.items_in(books), [ItemIdx(0), ItemIdx(2)]);
        assert_eq!(catalog.category_of(ItemIdx(1)), catalog.find_category("music").unwrap());
        let ranks: Vec<_> = catalog.indices().map(|idx| catalog.id_rank(idx)).collect();
        assert_eq!(ranks, [1, 0, 2]);
    }

    #[test]
    fn refuses_duplicates_and_bad_fields() {
        let err = Catalog::new([item("a", "x"), item("b", "x"), item("a", "y")]).unwrap_err();
        assert_eq!(err, (2, CatalogError::Duplicate { id: "a".to_owned(), first: ItemIdx(0) }));
        let err = Catalog::new([item("a b", "x")]).unwrap_err();
        assert_eq!(err, (0, CatalogError::Field { field: "id", error: FieldError::Id }));
        let err = Catalog::new([item("a", "")]).unwrap_err();
        assert_eq!(err.1.to_string(), "`category` must not be empty");
    }
}
