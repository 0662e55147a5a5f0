//! Interned entity data: the [`Store`] the CRM keeps between requests, and the
//! per-request [`Query`].

use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::{Entities, Entity, Request};
use serde_json::Value as Json;

use super::value::{ExtFn, Value};
use super::StoreError;

/// Strings interned to dense ids.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interner {
    map: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Interner {
    pub(crate) fn get(&self, s: &str) -> Option<u32> {
        self.map.get(s).copied()
    }
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        if let Some(id) = self.map.get(s) {
            return *id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let s: Arc<str> = s.into();
        self.names.push(s.clone());
        self.map.insert(s, id);
        id
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// The interned names shared by compiled policies and the stores built for them:
/// entity types, attribute names and entity uids (a uid is its type id and its id).
#[derive(Debug, Clone, Default)]
pub(crate) struct Symbols {
    pub(crate) types: Interner,
    pub(crate) attrs: Interner,
    uids: HashMap<u32, HashMap<Arc<str>, u32>>,
    /// Per uid id: its type id and its id string.
    uid_info: Vec<(u32, Arc<str>)>,
}

/// The type id of uids whose type no policy names (they match no `is`).
pub(crate) const UNKNOWN_TYPE: u32 = u32::MAX;

impl Symbols {
    pub(crate) fn uid(&mut self, ty: &str, id: &str) -> u32 {
        let t = self.types.intern(ty);
        self.uid_typed(t, id)
    }
    fn uid_typed(&mut self, t: u32, id: &str) -> u32 {
        if let Some(u) = self.uids.get(&t).and_then(|m| m.get(id)) {
            return *u;
        }
        let u = u32::try_from(self.uid_info.len()).unwrap_or(u32::MAX);
        let id: Arc<str> = id.into();
        self.uid_info.push((t, id.clone()));
        self.uids.entry(t).or_default().insert(id, u);
        u
    }
    fn lookup_uid(&self, ty: &str, id: &str) -> Option<u32> {
        let t = self.types.get(ty)?;
        self.uids.get(&t)?.get(id).copied()
    }
    pub(crate) fn uid_count(&self) -> usize {
        self.uid_info.len()
    }
    pub(crate) fn type_of(&self, uid: u32) -> Option<u32> {
        self.uid_info.get(uid as usize).map(|(t, _)| *t)
    }

    pub(crate) fn info(&self, uid: u32) -> Option<(u32, &str)> {
        self.uid_info.get(uid as usize).map(|(t, id)| (*t, &**id))
    }
}

/// Resolves names to ids while reading JSON values.
pub(crate) trait Resolve {
    fn uid(&mut self, ty: &str, id: &str) -> u32;
    fn attr(&mut self, name: &str) -> u32;
}

impl Resolve for Symbols {
    fn uid(&mut self, ty: &str, id: &str) -> u32 {
        Symbols::uid(self, ty, id)
    }
    fn attr(&mut self, name: &str) -> u32 {
        self.attrs.intern(name)
    }
}

/// Reads a uid `{"type": .., "id": ..}` or `{"__entity": {..}}`.
pub(crate) fn json_uid(j: &Json) -> Option<(&str, &str)> {
    let j = j.get("__entity").unwrap_or(j);
    Some((j.get("type")?.as_str()?, j.get("id")?.as_str()?))
}

/// Reads a value in Cedar's JSON value format (as written by `to_json_value`).
pub(crate) fn json_value(j: &Json, r: &mut impl Resolve) -> Result<Value, StoreError> {
    let bad = || StoreError::Value(j.to_string());
    Ok(match j {
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Long(n.as_i64().ok_or_else(bad)?),
        Json::String(s) => Value::String(s.as_str().into()),
        Json::Array(items) => Value::set(
            items
                .iter()
                .map(|i| json_value(i, r))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(map) => {
            if let (Some(e), 1) = (map.get("__entity"), map.len()) {
                let (ty, id) = json_uid(e).ok_or_else(bad)?;
                return Ok(Value::Entity(r.uid(ty, id)));
            }
            if let (Some(x), 1) = (map.get("__extn"), map.len()) {
                let f = x
                    .get("fn")
                    .and_then(Json::as_str)
                    .and_then(ExtFn::from_name)
                    .ok_or_else(bad)?;
                let args: Vec<Value> = match (x.get("arg"), x.get("args")) {
                    (Some(a), None) => vec![json_value(a, r)?],
                    (None, Some(Json::Array(a))) => a
                        .iter()
                        .map(|i| json_value(i, r))
                        .collect::<Result<_, _>>()?,
                    _ => return Err(bad()),
                };
                return f.call(&args).map_err(|_| bad());
            }
            let mut pairs = Vec::with_capacity(map.len());
            for (k, v) in map {
                pairs.push((r.attr(k), json_value(v, r)?));
            }
            Value::record(pairs)
        }
        Json::Null => return Err(bad()),
    })
}

/// One entity's data.
#[derive(Debug, Clone, Default)]
pub(crate) struct EntityData {
    /// Attributes sorted by attribute id.
    pub(crate) attrs: Arc<[(u32, Value)]>,
    /// Tags sorted by name.
    pub(crate) tags: Vec<(Arc<str>, Value)>,
    /// Direct parents, as given.
    parents: Vec<u32>,
    /// All ancestors (transitive closure of `parents`), sorted.
    pub(crate) ancestors: Vec<u32>,
}

/// A borrowed view of one entity's data: an entity of the store, or one the request
/// supplies itself ([`Query::with_entity`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct EntityRef<'a> {
    /// Attributes sorted by attribute id, without repeats.
    pub attrs: &'a [(u32, Value)],
    /// More attributes, in any order, held elsewhere and shared between entities (a
    /// caller's table of the few values an attribute takes, say): read without copying
    /// or counting references. An id is in `attrs` or here, not both.
    pub shared: &'a [&'a (u32, Value)],
    /// All ancestors (the transitive closure of the parents), sorted, without repeats.
    pub ancestors: &'a [u32],
    /// Tags sorted by name.
    pub tags: &'a [(Arc<str>, Value)],
}

impl<'a> EntityRef<'a> {
    /// The attribute `id`, if the entity has it.
    #[inline]
    pub fn attr(&self, id: u32) -> Option<&'a Value> {
        super::value::record_get(self.attrs, id)
            .or_else(|| self.shared.iter().find(|(a, _)| *a == id).map(|(_, v)| v))
    }

    /// The tag `name`, if the entity has it.
    pub fn tag(&self, name: &str) -> Option<&'a Value> {
        self.tags
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .and_then(|i| self.tags.get(i))
            .map(|(_, v)| v)
    }
}

impl EntityData {
    /// This entity's data as a borrowed view.
    pub fn view(&self) -> EntityRef<'_> {
        EntityRef {
            attrs: &self.attrs,
            shared: &[],
            ancestors: &self.ancestors,
            tags: &self.tags,
        }
    }
}

/// Entity data with interned ids and precomputed ancestors, built for one
/// [`CompiledPolicies`](super::CompiledPolicies) (it starts from their symbol table, so
/// entity and attribute ids agree with the compiled policies').
///
/// Keep it between requests; update single entities with [`Store::upsert`].
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) symbols: Symbols,
    /// Indexed by uid id; `None` for uids that are not entities of the store.
    pub(crate) entities: Vec<Option<EntityData>>,
    /// The Cedar entities, kept only when some policy falls back to Cedar.
    pub(crate) cedar: Option<Entities>,
    /// Which compiled policy set this store was built for.
    pub(crate) owner: u64,
}

impl Store {
    /// An empty store for `policies`.
    pub fn new(policies: &super::CompiledPolicies) -> Store {
        Store {
            symbols: policies.symbols.clone(),
            entities: Vec::new(),
            cedar: (!policies.fallbacks().is_empty()).then(Entities::empty),
            owner: policies.tag,
        }
    }

    /// A store holding `entities`, for `policies`.
    ///
    /// # Errors
    /// [`StoreError`] if Cedar cannot write the entities as JSON or they hold a value the
    /// compiled evaluator cannot read.
    pub fn from_entities(
        policies: &super::CompiledPolicies,
        entities: &Entities,
    ) -> Result<Store, StoreError> {
        let mut store = Store::new(policies);
        let json = entities
            .to_json_value()
            .map_err(|e| StoreError::Cedar(e.to_string()))?;
        let Json::Array(items) = json else {
            return Err(StoreError::Value("entities JSON is not an array".into()));
        };
        for item in &items {
            store.insert_json(item)?;
        }
        store.close_all();
        if store.cedar.is_some() {
            store.cedar = Some(entities.clone());
        }
        Ok(store)
    }

    /// Inserts or replaces one entity (its attributes, tags and parents), keeping every
    /// entity's ancestors up to date.
    ///
    /// # Errors
    /// [`StoreError`] as for [`Store::from_entities`]; the store is then unchanged.
    pub fn upsert(&mut self, entity: &Entity) -> Result<(), StoreError> {
        let json = entity
            .to_json_value()
            .map_err(|e| StoreError::Cedar(e.to_string()))?;
        let mut trial = self.symbols.clone();
        let (uid, data) = read_entity(&json, &mut trial)?;
        if let Some(cedar) = self.cedar.take() {
            let updated = cedar
                .upsert_entities([entity.clone()], None)
                .map_err(|e| StoreError::Cedar(e.to_string()));
            match updated {
                Ok(c) => self.cedar = Some(c),
                Err(e) => {
                    return Err(e);
                }
            }
        }
        self.symbols = trial;
        self.replace(uid, data);
        Ok(())
    }

    /// The number of entities in the store.
    pub fn len(&self) -> usize {
        self.entities.iter().filter(|e| e.is_some()).count()
    }

    /// Whether the store holds no entity.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts `data` for `uid`, keeping every entity's ancestors up to date.
    fn replace(&mut self, uid: u32, data: EntityData) {
        let parents = data.parents.clone();
        let old = self.put(uid, data);
        match old {
            Some(old) if old.parents == parents => {
                if let Some(Some(e)) = self.entities.get_mut(uid as usize) {
                    e.ancestors = old.ancestors;
                }
            }
            _ => {
                // The entity's closure and that of every descendant may change.
                let affected: Vec<u32> = (0..self.entities.len())
                    .filter_map(|i| u32::try_from(i).ok())
                    .filter(|&i| {
                        i == uid
                            || self
                                .entity(i)
                                .is_some_and(|e| e.ancestors.binary_search(&uid).is_ok())
                    })
                    .collect();
                for i in affected {
                    let anc = self.closure(i);
                    if let Some(Some(e)) = self.entities.get_mut(i as usize) {
                        e.ancestors = anc;
                    }
                }
            }
        }
    }

    /// The id of the uid `ty::"id"`, interned if new.
    pub fn intern_uid(&mut self, ty: &str, id: &str) -> u32 {
        self.symbols.uid(ty, id)
    }

    /// Every interned uid of entity type `ty`: its id string and its uid id.
    pub fn uids_of_type(&self, ty: &str) -> impl Iterator<Item = (&str, u32)> {
        self.symbols
            .types
            .get(ty)
            .and_then(|t| self.symbols.uids.get(&t))
            .into_iter()
            .flat_map(|m| m.iter().map(|(id, u)| (&**id, *u)))
    }

    /// The id of the uid `ty::"id"`, if interned (no new id is made).
    pub fn lookup_uid(&self, ty: &str, id: &str) -> Option<u32> {
        self.symbols.lookup_uid(ty, id)
    }

    /// The id of the attribute `name`, interned if new.
    pub fn intern_attr(&mut self, name: &str) -> u32 {
        self.symbols.attrs.intern(name)
    }

    /// The id of the entity type `name`, if interned.
    pub fn type_id(&self, name: &str) -> Option<u32> {
        self.symbols.types.get(name)
    }

    /// The type id of uid `uid`.
    pub fn type_of_uid(&self, uid: u32) -> Option<u32> {
        self.symbols.type_of(uid)
    }

    /// The type id and the id string of uid `uid`.
    pub fn uid_parts(&self, uid: u32) -> Option<(u32, &str)> {
        self.symbols.info(uid)
    }

    /// Inserts or replaces one entity given by ids (attributes in any order), keeping
    /// every entity's ancestors up to date. With `close` false, ancestors are left for
    /// [`Store::close`] (for building many entities at once).
    pub fn set_entity(
        &mut self,
        uid: u32,
        attrs: Vec<(u32, Value)>,
        mut parents: Vec<u32>,
        close: bool,
    ) {
        parents.sort_unstable();
        parents.dedup();
        let attrs = match Value::record(attrs) {
            Value::Record(r) => r,
            _ => Arc::from(Vec::new()),
        };
        let data = EntityData {
            attrs,
            tags: Vec::new(),
            parents,
            ancestors: Vec::new(),
        };
        if close {
            self.replace(uid, data);
        } else {
            self.put(uid, data);
        }
    }

    /// The ancestors of `uid` (none if it is not an entity of the store).
    pub fn entity_ancestors(&self, uid: u32) -> &[u32] {
        self.entity(uid).map_or(&[], |e| &e.ancestors)
    }

    /// Removes entity `uid` (its descendants keep it as an ancestor, as Cedar does for
    /// a parent that is not an entity).
    pub fn remove_entity(&mut self, uid: u32) {
        if let Some(slot) = self.entities.get_mut(uid as usize) {
            *slot = None;
        }
    }

    /// The tag of the compiled policy set the store was built for.
    pub fn owner_tag(&self) -> u64 {
        self.owner
    }

    /// Computes every entity's ancestors.
    pub fn close(&mut self) {
        self.close_all();
    }

    fn put(&mut self, uid: u32, data: EntityData) -> Option<EntityData> {
        let i = uid as usize;
        if self.entities.len() <= i {
            self.entities.resize_with(i + 1, || None);
        }
        self.entities.get_mut(i).and_then(|s| s.replace(data))
    }

    fn insert_json(&mut self, item: &Json) -> Result<(), StoreError> {
        let (uid, data) = read_entity(item, &mut self.symbols)?;
        self.put(uid, data);
        Ok(())
    }

    /// The transitive closure of `uid`'s parents.
    fn closure(&self, uid: u32) -> Vec<u32> {
        let mut seen: Vec<u32> = Vec::new();
        let mut stack: Vec<u32> = self.parents(uid).to_vec();
        while let Some(p) = stack.pop() {
            if seen.contains(&p) {
                continue;
            }
            seen.push(p);
            stack.extend_from_slice(self.parents(p));
        }
        seen.sort_unstable();
        seen
    }

    fn parents(&self, uid: u32) -> &[u32] {
        self.entities
            .get(uid as usize)
            .and_then(Option::as_ref)
            .map_or(&[], |e| &e.parents)
    }

    fn close_all(&mut self) {
        for i in 0..self.entities.len() {
            let Ok(uid) = u32::try_from(i) else { continue };
            if self.entities.get(i).is_some_and(Option::is_some) {
                let anc = self.closure(uid);
                if let Some(Some(e)) = self.entities.get_mut(i) {
                    e.ancestors = anc;
                }
            }
        }
    }

    pub(crate) fn entity(&self, uid: u32) -> Option<&EntityData> {
        self.entities.get(uid as usize).and_then(Option::as_ref)
    }
}

fn read_entity(item: &Json, sym: &mut Symbols) -> Result<(u32, EntityData), StoreError> {
    let bad = || StoreError::Value(item.to_string());
    let (ty, id) = item.get("uid").and_then(json_uid).ok_or_else(bad)?;
    let uid = sym.uid(ty, id);
    let mut attrs = Vec::new();
    if let Some(Json::Object(map)) = item.get("attrs") {
        for (k, v) in map {
            attrs.push((sym.attrs.intern(k), json_value(v, sym)?));
        }
    }
    let Value::Record(attrs) = Value::record(attrs) else {
        return Err(bad());
    };
    let mut tags = Vec::new();
    if let Some(Json::Object(map)) = item.get("tags") {
        for (k, v) in map {
            tags.push((Arc::<str>::from(k.as_str()), json_value(v, sym)?));
        }
    }
    tags.sort_by(|a, b| a.0.cmp(&b.0));
    let mut parents = Vec::new();
    if let Some(Json::Array(ps)) = item.get("parents") {
        for p in ps {
            let (t, i) = json_uid(p).ok_or_else(bad)?;
            parents.push(sym.uid(t, i));
        }
    }
    parents.sort_unstable();
    parents.dedup();
    Ok((
        uid,
        EntityData {
            attrs,
            tags,
            parents,
            ancestors: Vec::new(),
        },
    ))
}

/// Names a [`Query`] meets that its store does not know: ids past the store's.
#[derive(Debug, Default)]
struct Overlay<'s> {
    store: Option<&'s Symbols>,
    uids: HashMap<(String, String), u32>,
    uid_types: Vec<u32>,
    attrs: HashMap<String, u32>,
}

impl Resolve for Overlay<'_> {
    fn uid(&mut self, ty: &str, id: &str) -> u32 {
        let Some(sym) = self.store else { return 0 };
        if let Some(u) = sym.lookup_uid(ty, id) {
            return u;
        }
        if let Some(u) = self.uids.get(&(ty.to_string(), id.to_string())) {
            return *u;
        }
        let base = sym.uid_count();
        let u = u32::try_from(base + self.uid_types.len()).unwrap_or(u32::MAX);
        self.uid_types
            .push(sym.types.get(ty).unwrap_or(UNKNOWN_TYPE));
        self.uids.insert((ty.to_string(), id.to_string()), u);
        u
    }
    fn attr(&mut self, name: &str) -> u32 {
        let Some(sym) = self.store else { return 0 };
        if let Some(a) = sym.attrs.get(name) {
            return a;
        }
        let next = u32::try_from(sym.attrs.len() + self.attrs.len()).unwrap_or(u32::MAX);
        *self.attrs.entry(name.to_string()).or_insert(next)
    }
}

/// A query's context: a record value, or attribute pairs borrowed from the caller (no
/// allocation per request).
#[derive(Debug, Clone)]
pub enum Ctx<'s> {
    /// A record value.
    Value(Value),
    /// `(attribute id, value)` pairs sorted by attribute id, without repeats.
    Pairs(&'s [(u32, Value)]),
}

impl Ctx<'_> {
    fn pairs(&self) -> Option<&[(u32, Value)]> {
        match self {
            Ctx::Value(Value::Record(r)) => Some(r),
            Ctx::Value(_) => None,
            Ctx::Pairs(p) => Some(p),
        }
    }
}

/// One request, resolved against a [`Store`]: principal, action and resource as ids and
/// the context as a record value.
#[derive(Debug, Clone)]
pub struct Query<'s> {
    pub(crate) store: &'s Store,
    /// The principal's uid.
    pub principal: u32,
    /// The action's uid.
    pub action: u32,
    /// The resource's uid.
    pub resource: u32,
    /// The context.
    pub context: Ctx<'s>,
    /// An entity the request supplies itself, not held by the store (its uid, its type
    /// and its data): e.g. the resource, read with the request from the caller's own
    /// records.
    pub local: Option<(u32, u32, EntityRef<'s>)>,
    /// Types of the uids the store does not know (ids from the store's uid count on).
    pub(crate) local_types: Vec<u32>,
    pub(crate) request: Option<&'s Request>,
    /// A context attribute given apart from `context` (attribute id, entity uid): the
    /// crate's engine passes the field asked for this way, one field after another.
    pub field: Option<(u32, u32)>,
    /// An entity of the store the request must not see (as if absent).
    pub hidden: Option<u32>,
}

impl<'s> Query<'s> {
    /// Resolves a Cedar request against `store`.
    ///
    /// # Errors
    /// [`StoreError`] if the request lacks a principal, action or resource (a partial
    /// request) or its context cannot be read.
    pub fn from_request(request: &'s Request, store: &'s Store) -> Result<Query<'s>, StoreError> {
        let mut overlay = Overlay {
            store: Some(&store.symbols),
            ..Overlay::default()
        };
        let mut uid = |u: Option<&cedar_policy::EntityUid>| -> Result<u32, StoreError> {
            let u = u.ok_or(StoreError::Partial)?;
            Ok(overlay.uid(&u.type_name().to_string(), u.id().unescaped()))
        };
        let principal = uid(request.principal())?;
        let action = uid(request.action())?;
        let resource = uid(request.resource())?;
        let context = match request.context() {
            // An empty context (most requests) needs no JSON round trip.
            Some(c) if c.clone().into_iter().next().is_none() => Value::Record(Vec::new().into()),
            Some(c) => {
                let j = c
                    .to_json_value()
                    .map_err(|e| StoreError::Cedar(e.to_string()))?;
                json_value(&j, &mut overlay)?
            }
            None => return Err(StoreError::Partial),
        };
        let context = match context {
            Value::Record(_) => context,
            _ => return Err(StoreError::Value("context is not a record".into())),
        };
        Ok(Query {
            store,
            principal,
            action,
            resource,
            context: Ctx::Value(context),
            local: None,
            local_types: overlay.uid_types,
            request: Some(request),
            field: None,
            hidden: None,
        })
    }

    /// A query built directly from ids (no Cedar request): the crate's engine builds its
    /// queries this way.
    pub fn direct(
        store: &'s Store,
        principal: u32,
        action: u32,
        resource: u32,
        context: Ctx<'s>,
    ) -> Query<'s> {
        Query {
            store,
            principal,
            action,
            resource,
            context,
            local: None,
            local_types: Vec::new(),
            request: None,
            field: None,
            hidden: None,
        }
    }

    /// The data of entity `uid`, unless it is absent or hidden from this request.
    #[inline]
    pub fn entity(&self, uid: u32) -> Option<EntityRef<'s>> {
        if let Some((u, _, data)) = self.local {
            if u == uid {
                return Some(data);
            }
        }
        if self.hidden == Some(uid) {
            return None;
        }
        self.store.entity(uid).map(EntityData::view)
    }

    /// This query with the entity `uid` of type `type_id` supplied by the request: it
    /// is read from `data` instead of the store (a uid the store does not hold, or one
    /// whose stored data the request replaces).
    pub fn with_entity(mut self, uid: u32, type_id: u32, data: EntityRef<'s>) -> Query<'s> {
        self.local = Some((uid, type_id, data));
        self
    }

    /// The context attribute `attr`, borrowed from the context (the field given apart
    /// is an entity uid, made on the spot).
    #[inline]
    pub(crate) fn context_attr(&self, attr: u32) -> Option<std::borrow::Cow<'_, Value>> {
        if let Some((a, u)) = self.field {
            if a == attr {
                return Some(std::borrow::Cow::Owned(Value::Entity(u)));
            }
        }
        self.context
            .pairs()
            .and_then(|r| super::value::record_get(r, attr))
            .map(std::borrow::Cow::Borrowed)
    }

    /// The whole context record (with the separately given attribute, if any).
    pub(crate) fn context_value(&self) -> Value {
        match (self.field, &self.context) {
            (None, Ctx::Value(v)) => v.clone(),
            (field, ctx) => {
                let mut pairs: Vec<(u32, Value)> =
                    ctx.pairs().map(<[_]>::to_vec).unwrap_or_default();
                if let Some((a, u)) = field {
                    pairs.push((a, Value::Entity(u)));
                }
                Value::record(pairs)
            }
        }
    }

    /// The type id of an entity uid (`UNKNOWN_TYPE` for a type no policy names).
    pub(crate) fn type_of(&self, uid: u32) -> u32 {
        if let Some((u, t, _)) = self.local {
            if u == uid {
                return t;
            }
        }
        self.store.symbols.type_of(uid).unwrap_or_else(|| {
            let local = (uid as usize).saturating_sub(self.store.symbols.uid_count());
            self.local_types.get(local).copied().unwrap_or(UNKNOWN_TYPE)
        })
    }
}
