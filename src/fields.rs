//! The member-field catalogue and [`FieldSet`], a bitset over it.

use std::fmt;

/// The most fields a catalogue may hold: a [`FieldSet`] is one `u64`.
pub const MAX_FIELDS: usize = 64;

/// A field's position in the catalogue (its bit in a [`FieldSet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldId(u8);

impl FieldId {
    /// The field's position in the catalogue.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// One field of a member record, as the catalogue describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldInfo {
    /// The field's name (the id of its `Field` entity).
    pub name: String,
    /// The class it belongs to (a `FieldClass` of the schema).
    pub class: String,
    /// Whether it is part of the minimal record kept after retention.
    pub minimal: bool,
    /// What the field holds.
    pub description: String,
}

/// The member fields that policies can grant, in catalogue order.
#[derive(Debug, Clone)]
pub struct FieldCatalogue {
    fields: Vec<FieldInfo>,
    /// Each name's id: a request names its field, and one hash finds it.
    ids: rustc_hash::FxHashMap<Box<str>, FieldId>,
}

impl PartialEq for FieldCatalogue {
    fn eq(&self, other: &Self) -> bool {
        // `ids` is derived from `fields`.
        self.fields == other.fields
    }
}

impl Eq for FieldCatalogue {}

impl FieldCatalogue {
    /// A catalogue of these fields; `None` if there are more than [`MAX_FIELDS`].
    pub(crate) fn new(fields: Vec<FieldInfo>) -> Option<Self> {
        if fields.len() > MAX_FIELDS {
            return None;
        }
        let mut ids = rustc_hash::FxHashMap::default();
        for (i, f) in fields.iter().enumerate() {
            // The first of a repeated name, as a scan in catalogue order would find.
            ids.entry(f.name.as_str().into())
                .or_insert(FieldId(u8::try_from(i).ok()?));
        }
        Some(FieldCatalogue { fields, ids })
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the catalogue has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The id of the field with this name.
    pub fn id(&self, name: &str) -> Option<FieldId> {
        self.ids.get(name).copied()
    }

    /// The field with this id.
    pub fn get(&self, id: FieldId) -> Option<&FieldInfo> {
        self.fields.get(id.index())
    }

    /// Every field with its id, in catalogue order.
    pub fn iter(&self) -> impl Iterator<Item = (FieldId, &FieldInfo)> {
        // The constructor keeps the catalogue within `MAX_FIELDS`, so every index fits.
        self.fields
            .iter()
            .enumerate()
            .filter_map(|(i, f)| Some((FieldId(u8::try_from(i).ok()?), f)))
    }

    /// The set of every field.
    pub fn all(&self) -> FieldSet {
        self.iter().map(|(id, _)| id).collect()
    }

    /// The names of the fields in `set`, in catalogue order.
    pub fn names(&self, set: FieldSet) -> Vec<&str> {
        set.iter()
            .filter_map(|id| self.get(id))
            .map(|f| f.name.as_str())
            .collect()
    }
}

/// A set of catalogue fields: one bit per field.
///
/// # Example
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = membergate::Engine::from_dir("policies")?;
/// let cat = engine.catalogue();
/// let phone = cat.id("phone").ok_or("no phone field")?;
/// let set = membergate::FieldSet::EMPTY.with(phone);
/// assert!(set.contains(phone));
/// assert_eq!(cat.names(set), ["phone"]);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FieldSet(u64);

impl FieldSet {
    /// The empty set.
    pub const EMPTY: FieldSet = FieldSet(0);

    /// The set with `id` added.
    #[must_use]
    pub fn with(self, id: FieldId) -> FieldSet {
        FieldSet(self.0 | (1u64 << id.0))
    }

    /// Whether `id` is in the set.
    pub fn contains(self, id: FieldId) -> bool {
        self.0 & (1u64 << id.0) != 0
    }

    /// The number of fields in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The fields in both sets.
    #[must_use]
    pub fn intersection(self, other: FieldSet) -> FieldSet {
        FieldSet(self.0 & other.0)
    }

    /// The fields in `self` but not in `other`.
    #[must_use]
    pub fn difference(self, other: FieldSet) -> FieldSet {
        FieldSet(self.0 & !other.0)
    }

    /// The set with these bits.
    pub(crate) fn from_bits(bits: u64) -> FieldSet {
        FieldSet(bits)
    }

    /// The set as bits: bit `i` is the field with index `i`.
    pub fn bits(self) -> u64 {
        self.0
    }

    /// The field ids in the set, in catalogue order.
    pub fn iter(self) -> impl Iterator<Item = FieldId> {
        (0u8..64)
            .filter(move |i| self.0 & (1u64 << i) != 0)
            .map(FieldId)
    }
}

impl FromIterator<FieldId> for FieldSet {
    fn from_iter<I: IntoIterator<Item = FieldId>>(iter: I) -> Self {
        iter.into_iter().fold(FieldSet::EMPTY, FieldSet::with)
    }
}

impl fmt::Debug for FieldSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(|i| i.0)).finish()
    }
}
