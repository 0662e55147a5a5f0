//! A request's member: as the CRM gave it ([`Subject`], what checks read) and, when a
//! condition needs the compiled evaluator, written for it ([`MemberEntity`]: its own
//! attributes on the stack in id order, its status and channels borrowed from the
//! index's table).

use std::cell::OnceCell;

use cedar_compiled::{EntityRef, Value};

use super::{channel_bit, status_index, FxMap, Index};
use crate::entities::{millis, Attr, Record, Sink, Val};
use crate::records::{Member, MemberStatus};

/// How many values the table of shared values holds per attribute: the five member
/// statuses, then the eight sets of channels.
pub(super) const SHARED_CODES: usize = 5 + 8;

/// The place of a value in the table of shared values, if it is a status or a set of
/// channels.
pub(super) fn shared_code(v: &Val<'_>) -> Option<usize> {
    match v {
        Val::Status(s) => Some(status_index(*s)),
        Val::Channels(cs) => Some(5 + cs.iter().fold(0, |b, c| b | channel_bit(*c))),
        _ => None,
    }
}

/// Per attribute, its place among a member's own attributes (those a member with every
/// optional attribute describes, but for the shared ones) sorted by their ids `attrs`.
pub(super) fn member_rank(attrs: &[u32; Attr::ALL.len()]) -> [u8; Attr::ALL.len()] {
    struct Names(Vec<Attr>);
    impl<'a> Sink<'a> for Names {
        fn attr(&mut self, attr: Attr, v: Val<'a>) {
            if shared_code(&v).is_none() {
                self.0.push(attr);
            }
        }
        fn parent(&mut self, _: &'static str, _: &'a str) {}
    }
    let full = Member {
        status: MemberStatus::Member,
        clp: String::new(),
        joined: jiff::Timestamp::UNIX_EPOCH,
        left: Some(jiff::Timestamp::UNIX_EPOCH),
        in_good_standing: true,
        consents: Vec::new(),
        opt_outs: Vec::new(),
    };
    let mut names = Names(Vec::new());
    Record::Member(&full).describe("", &mut names);
    names
        .0
        .sort_unstable_by_key(|a| attrs.get(*a as usize).copied().unwrap_or(u32::MAX));
    let mut rank = [u8::MAX; Attr::ALL.len()];
    for (r, a) in names.0.iter().enumerate() {
        if let (Some(slot), Ok(r)) = (rank.get_mut(*a as usize), u8::try_from(r)) {
            *slot = r;
        }
    }
    rank
}

/// A member of a request, checked and resolved against the directory: its uid and
/// ancestors (its CLP and region), its record as given, and its entity for the compiled
/// evaluator, written on first use.
pub(crate) struct Subject<'d> {
    /// Its uid, looked up on first use (few conditions name a member).
    uid: OnceCell<u32>,
    /// The uids of the members the directory knows (any other's is `fresh`).
    listed: &'d FxMap<Box<str>, u32>,
    fresh: u32,
    pub(crate) ancestors: &'d [u32],
    /// Its status's bit ([`status_index`]).
    pub(crate) status: u8,
    /// When it joined and left, in milliseconds since the epoch.
    pub(crate) joined: i64,
    pub(crate) left: Option<i64>,
    id: &'d str,
    /// The record as given (its consents and opt-outs are read from here).
    pub(crate) member: &'d Member,
    index: &'d Index,
    entity: OnceCell<MemberEntity<'d>>,
}

impl<'d> Subject<'d> {
    /// The member `id`, with `ancestors`, for `index`'s evaluator: its uid is the one
    /// `listed` gives it, else `fresh`.
    pub(crate) fn new(
        index: &'d Index,
        (listed, fresh): (&'d FxMap<Box<str>, u32>, u32),
        (id, member): (&'d str, &'d Member),
        ancestors: &'d [u32],
    ) -> Subject<'d> {
        Subject {
            uid: OnceCell::new(),
            listed,
            fresh,
            ancestors,
            status: 1 << status_index(member.status),
            joined: millis(member.joined),
            left: member.left.map(millis),
            id,
            member,
            index,
            entity: OnceCell::new(),
        }
    }

    /// The member's uid.
    #[inline]
    pub(crate) fn uid(&self) -> u32 {
        *self
            .uid
            .get_or_init(|| self.listed.get(self.id).copied().unwrap_or(self.fresh))
    }

    /// The member written for the compiled evaluator (once).
    pub(crate) fn entity(&self) -> &MemberEntity<'d> {
        self.entity
            .get_or_init(|| MemberEntity::write(self.index, (self.id, self.member), self.ancestors))
    }
}

/// A member of a request, resolved for the compiled evaluator: its uid and its data,
/// on the stack, its status and channels borrowed from the index's table of shared
/// values (no copy, no reference count).
pub(crate) struct MemberEntity<'d> {
    attrs: [(u32, Value); 4],
    len: usize,
    shared: [&'d (u32, Value); 4],
    shared_len: usize,
    ancestors: &'d [u32],
}

/// What a [`MemberEntity`]'s unused shared slots point to.
static NO_ATTR: (u32, Value) = (u32::MAX, Value::Bool(false));

impl<'d> MemberEntity<'d> {
    /// The member `id` written for `index`'s evaluator, with `ancestors`
    /// (its CLP and region).
    pub(crate) fn write(
        index: &'d Index,
        (id, member): (&str, &Member),
        ancestors: &'d [u32],
    ) -> MemberEntity<'d> {
        let mut sink = MemberSink {
            index,
            entity: MemberEntity {
                attrs: std::array::from_fn(|_| (0, Value::Bool(false))),
                len: 0,
                shared: [&NO_ATTR; 4],
                shared_len: 0,
                ancestors,
            },
            written: 0,
        };
        Record::Member(member).describe(id, &mut sink);
        sink.finish()
    }

    /// The member's data, as the evaluator reads an entity.
    pub(crate) fn view(&self) -> EntityRef<'_> {
        EntityRef {
            attrs: self.attrs.get(..self.len).unwrap_or(&[]),
            shared: self.shared.get(..self.shared_len).unwrap_or(&[]),
            ancestors: self.ancestors,
            tags: &[],
        }
    }
}

/// The member writer: each attribute of its own at its place in id order
/// ([`Index::member_rank`]), a status or channels as a reference into the table.
struct MemberSink<'d> {
    index: &'d Index,
    entity: MemberEntity<'d>,
    /// Bit `r`: the own attribute of rank `r` was written.
    written: u8,
}

impl<'a, 'd> Sink<'a> for MemberSink<'d> {
    fn attr(&mut self, attr: Attr, value: Val<'a>) {
        let index = self.index;
        let e = &mut self.entity;
        if let Some(pair) = index.shared(attr, &value) {
            if let Some(slot) = e.shared.get_mut(e.shared_len) {
                *slot = pair;
                e.shared_len += 1;
            }
            return;
        }
        let Some(rank) = index.member_rank(attr) else {
            return;
        };
        let v = index.value(value, &mut |_, _| u32::MAX);
        if let Some(slot) = e.attrs.get_mut(rank) {
            *slot = (index.attr(attr), v);
            self.written |= 1 << rank;
        }
    }
    fn parent(&mut self, _: &'static str, _: &'a str) {}
}

impl<'d> MemberSink<'d> {
    /// The entity, its own attributes moved together in id order.
    fn finish(self) -> MemberEntity<'d> {
        let mut e = self.entity;
        let mut len = 0;
        for rank in 0..e.attrs.len() {
            if self.written & (1 << rank) != 0 {
                e.attrs.swap(len, rank);
                len += 1;
            }
        }
        e.len = len;
        e
    }
}
