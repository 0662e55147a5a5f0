//! Property-based differential tests: the compiled evaluator (`cedar_compiled`)
//! against `cedar_policy::Authorizer` on generated entity stores, requests and policies.
//! Every generated case decides each of its requests both ways and asserts the same
//! decision, the same set of determining policies and the same set of erroring policies.
//! It also specialises each policy's conditions to the request's principal and action
//! (`specialize_expr`, the resource's data left unknown) and asserts they evaluate as
//! the conditions do.
//!
//! Three suites share one generator (a schema description drives entities, contexts and
//! requests; a typed expression generator over the schema's vocabulary drives policies):
//!
//! 1. `bundled_schema_matches_cedar`: the crate's schema, domain values (member statuses,
//!    datetimes on the retention and election boundaries, consents...), random subsets of
//!    the bundled policies plus generated ones.
//! 2. `random_schema_matches_cedar`: small random schemas (entity types with random
//!    attribute types, optional attributes, membership hierarchy), entities that conform
//!    to them (parsed with the schema) or not (parsed without one).
//! 3. `edge_values_match_cedar`: literals on the edges (i64 bounds, extension literals
//!    valid and invalid, `like` patterns with escapes), deeper nesting.
//!
//! Cases per run: `MEMBERGATE_PROPTEST_CASES` (the total over the three suites, default
//! [`DEFAULT_TOTAL_CASES`]) split 20% / 15% / 65% (about 2.1, 1.8 and 1.0 ms a case in
//! release: the shares let the three suites finish together on two test threads, about
//! 130 s of CPU for 100,000 cases). Failures shrink to a minimal case; its policies (Cedar
//! text), entities (JSON) and request are in the message.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, OnceLock};

use cedar_compiled::lowlevel::{eval_expr, specialize_expr, specialize_for_context};
use cedar_compiled::{CompiledPolicies, Query, Store};
use cedar_policy::{
    AuthorizationError, Authorizer, Context, Entities, EntityUid, Policy, PolicyId, PolicySet,
    Request, Schema, SchemaFragment,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::strategy::Union;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value as Json};

/// Generated cases per run over the three suites, unless `MEMBERGATE_PROPTEST_CASES`
/// says otherwise.
const DEFAULT_TOTAL_CASES: u32 = 100_000;

/// The test configuration of a suite taking `percent` of the total cases.
fn config(percent: u32) -> ProptestConfig {
    let total = std::env::var("MEMBERGATE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(u64::from(DEFAULT_TOTAL_CASES));
    let cases = u32::try_from((total * u64::from(percent)).div_ceil(100)).unwrap_or(u32::MAX);
    ProptestConfig {
        cases,
        // Generators aim at parseable policies; a rare reject is tolerated.
        max_global_rejects: cases / 10 + 1_000,
        ..ProptestConfig::default()
    }
}

// ===================================================================== schema descriptions

/// An attribute type, as a schema declares it.
#[derive(Clone, Debug, PartialEq)]
enum AttrTy {
    Bool,
    Long,
    Str,
    Set(Box<AttrTy>),
    Record(Vec<AttrDesc>),
    Entity(String),
    Datetime,
    Duration,
    Decimal,
    Ip,
}

/// One attribute of an entity type, a record or the context.
#[derive(Clone, Debug, PartialEq)]
struct AttrDesc {
    name: String,
    ty: AttrTy,
    required: bool,
}

/// One entity type: its attributes, the types it may be a member of, and the ids
/// entities of it may have (the enumerated ids for an enum type, none of which the
/// generator creates as entities).
#[derive(Clone, Debug, PartialEq)]
struct EntityDesc {
    name: String,
    parents: Vec<String>,
    attrs: Vec<AttrDesc>,
    ids: Vec<String>,
    is_enum: bool,
}

/// A schema, as much of it as the generators need.
#[derive(Clone, Debug, PartialEq)]
struct SchemaDesc {
    entities: Vec<EntityDesc>,
    /// Action ids with the action groups each is in.
    actions: Vec<(String, Vec<String>)>,
    context: Vec<AttrDesc>,
}

/// The id of an entity that no generated store holds.
const GHOST: &str = "ghost";

impl SchemaDesc {
    fn entity(&self, name: &str) -> Option<&EntityDesc> {
        self.entities.iter().find(|e| e.name == name)
    }

    /// The ids an entity reference of type `ty` may name: one of them never exists,
    /// except for enum types in data (where Cedar refuses an id outside the enum).
    fn ids_of(&self, ty: &str) -> Vec<String> {
        let e = self.entity(ty);
        let mut ids = e.map(|e| e.ids.clone()).unwrap_or_default();
        if !e.is_some_and(|e| e.is_enum) {
            ids.push(GHOST.to_string());
        }
        ids
    }

    /// Every uid the generators may name, absent ones included.
    fn uids(&self) -> Vec<(String, String)> {
        let mut uids: Vec<(String, String)> = self
            .entities
            .iter()
            .flat_map(|e| {
                let ids = e
                    .ids
                    .iter()
                    .cloned()
                    .chain(std::iter::once(GHOST.to_string()));
                ids.map(|id| (e.name.clone(), id))
            })
            .collect();
        uids.extend(self.action_ids().map(|a| ("Action".to_string(), a)));
        uids
    }

    fn action_ids(&self) -> impl Iterator<Item = String> + '_ {
        self.actions
            .iter()
            .map(|(a, _)| a.clone())
            .chain(std::iter::once(GHOST.to_string()))
    }

    /// The schema in Cedar syntax.
    fn to_cedar(&self) -> String {
        fn ty(t: &AttrTy) -> String {
            match t {
                AttrTy::Bool => "Bool".into(),
                AttrTy::Long => "Long".into(),
                AttrTy::Str => "String".into(),
                AttrTy::Set(e) => format!("Set<{}>", ty(e)),
                AttrTy::Record(fields) => record(fields),
                AttrTy::Entity(e) => e.clone(),
                AttrTy::Datetime => "datetime".into(),
                AttrTy::Duration => "duration".into(),
                AttrTy::Decimal => "decimal".into(),
                AttrTy::Ip => "ipaddr".into(),
            }
        }
        fn record(fields: &[AttrDesc]) -> String {
            let fields: Vec<String> = fields
                .iter()
                .map(|f| {
                    let q = if f.required { "" } else { "?" };
                    format!("\"{}\"{q}: {}", f.name, ty(&f.ty))
                })
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        let mut out = String::new();
        for e in &self.entities {
            out.push_str(&format!("entity {}", e.name));
            if !e.parents.is_empty() {
                out.push_str(&format!(" in [{}]", e.parents.join(", ")));
            }
            if e.is_enum {
                let ids: Vec<String> = e.ids.iter().map(|i| format!("\"{i}\"")).collect();
                out.push_str(&format!(" enum [{}]", ids.join(", ")));
            } else {
                out.push_str(&format!(" {}", record(&e.attrs)));
            }
            out.push_str(";\n");
        }
        let types: Vec<&str> = self
            .entities
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>();
        for (a, groups) in &self.actions {
            out.push_str(&format!("action \"{a}\""));
            if !groups.is_empty() {
                let g: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
                out.push_str(&format!(" in [{}]", g.join(", ")));
            }
            if groups.is_empty() {
                out.push_str(";\n");
            } else {
                out.push_str(&format!(
                    " appliesTo {{ principal: [{t}], resource: [{t}], context: {} }};\n",
                    record(&self.context),
                    t = types.join(", ")
                ));
            }
        }
        out
    }
}

/// Reads a schema from its JSON form (as [`SchemaFragment::to_json_value`] writes it):
/// entity types, their attributes, enums, actions and the context of the first action
/// that has one.
fn desc_from_schema_json(j: &Json) -> SchemaDesc {
    let ns = j
        .as_object()
        .and_then(|m| m.values().next())
        .expect("namespace");
    let common = ns.get("commonTypes").cloned().unwrap_or(json!({}));
    fn attr_ty(t: &Json, common: &Json) -> AttrTy {
        let kind = t["type"].as_str().expect("type");
        let name = t.get("name").and_then(Json::as_str).unwrap_or("");
        match (kind, name) {
            ("Boolean", _) | ("EntityOrCommon", "Bool" | "Boolean") => AttrTy::Bool,
            ("Long", _) | ("EntityOrCommon", "Long") => AttrTy::Long,
            ("String", _) | ("EntityOrCommon", "String") => AttrTy::Str,
            ("Set", _) => AttrTy::Set(Box::new(attr_ty(&t["element"], common))),
            ("Record", _) => AttrTy::Record(attrs(t, common)),
            ("Extension", "datetime") | ("EntityOrCommon", "datetime") => AttrTy::Datetime,
            ("Extension", "duration") | ("EntityOrCommon", "duration") => AttrTy::Duration,
            ("Extension", "decimal") | ("EntityOrCommon", "decimal") => AttrTy::Decimal,
            ("Extension", "ipaddr") | ("EntityOrCommon", "ipaddr") => AttrTy::Ip,
            ("EntityOrCommon", n) if common.get(n).is_some() => attr_ty(&common[n], common),
            ("Entity" | "EntityOrCommon", n) => AttrTy::Entity(n.to_string()),
            (k, n) if common.get(k).is_some() && n.is_empty() => attr_ty(&common[k], common),
            other => panic!("schema type {other:?}"),
        }
    }
    fn attrs(record: &Json, common: &Json) -> Vec<AttrDesc> {
        record["attributes"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(name, t)| AttrDesc {
                        name: name.clone(),
                        ty: attr_ty(t, common),
                        required: t.get("required").and_then(Json::as_bool).unwrap_or(true),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    let mut entities = Vec::new();
    for (name, e) in ns["entityTypes"].as_object().expect("entity types") {
        let enum_ids: Option<Vec<String>> = e.get("enum").and_then(Json::as_array).map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        });
        entities.push(EntityDesc {
            name: name.clone(),
            parents: e
                .get("memberOfTypes")
                .and_then(Json::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            attrs: e
                .get("shape")
                .map(|s| attrs(s, &common))
                .unwrap_or_default(),
            is_enum: enum_ids.is_some(),
            ids: enum_ids.unwrap_or_else(|| vec!["a".into(), "b".into()]),
        });
    }
    let mut actions = Vec::new();
    let mut context = None;
    for (name, a) in ns["actions"].as_object().expect("actions") {
        let groups = a
            .get("memberOf")
            .and_then(Json::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(|v| v["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        actions.push((name.clone(), groups));
        if let Some(c) = a.get("appliesTo").and_then(|t| t.get("context")) {
            if context.is_none() {
                context = Some(match attr_ty(c, &common) {
                    AttrTy::Record(fields) => fields,
                    other => panic!("context type {other:?}"),
                });
            }
        }
    }
    SchemaDesc {
        entities,
        actions,
        context: context.unwrap_or_default(),
    }
}

// ===================================================================== literal pools

/// The literals the generators draw from. Entity data only uses the valid extension
/// literals; expressions also use the invalid ones (`bad`), which error at evaluation.
#[derive(Clone, Debug, Default)]
struct Pools {
    longs: Vec<i64>,
    strings: Vec<String>,
    datetimes: Vec<String>,
    durations: Vec<String>,
    decimals: Vec<String>,
    ips: Vec<String>,
    /// Invalid extension literals: (function, argument).
    bad: Vec<(&'static str, String)>,
    tags: Vec<String>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn bad(f: &'static str, v: &[&str]) -> Vec<(&'static str, String)> {
    v.iter().map(|s| (f, s.to_string())).collect()
}

/// Pools for the bundled schema: member statuses, channels, roles and purposes; datetimes
/// on both sides of the boundaries the policies test (a member who left on 2024-01-01
/// leaves retention 730 days later, on 2025-12-31; the same instant written with and
/// without an offset; a millisecond before and after).
fn domain_pools() -> Pools {
    Pools {
        longs: vec![0, 1, -1, 99, 100, 101, i64::MAX, i64::MIN],
        strings: strings(&[
            "member",
            "registered_supporter",
            "affiliated_supporter",
            "former",
            "expelled",
            "phone",
            "email",
            "post",
            "candidate",
            "agent",
            "staff",
            "secretary",
            "chair",
            "equality_monitoring",
            "subject_access",
            "complaint",
            "",
        ]),
        datetimes: strings(&[
            "2022-01-01",
            "2023-12-31T23:59:59.999Z",
            "2024-01-01",
            "2024-01-01T00:00:00Z",
            "2024-01-01T01:00:00+0100",
            "2024-01-01T00:00:00.001Z",
            "2024-02-29T12:00:00Z",
            "2025-12-30T23:59:59.999Z",
            "2025-12-31",
            "2025-12-31T00:00:00.001Z",
            "2026-01-01T00:00:00.000+0000",
            "2030-06-15T08:30:00-0530",
        ]),
        durations: strings(&["730d", "0ms", "1ms", "-1ms", "1h", "-730d", "24h"]),
        decimals: strings(&["0.0", "1.5", "-2.25"]),
        ips: strings(&["10.0.0.1", "10.0.0.0/8", "::1"]),
        bad: [
            bad("datetime", &["2023-02-29", "2024-01-01T24:00:00Z"]),
            bad("duration", &["", "1x"]),
            bad("decimal", &["1.23456"]),
            bad("ip", &["10.0.0.1/33"]),
        ]
        .concat(),
        tags: strings(&["t"]),
    }
}

/// Generic pools for random schemas.
fn generic_pools() -> Pools {
    Pools {
        longs: vec![0, 1, -1, 2, 7, i64::MAX, i64::MIN],
        strings: strings(&["", "a", "b", "ab", "a*b", "é", "x y"]),
        datetimes: strings(&[
            "1970-01-01",
            "2024-02-29",
            "2024-02-29T00:00:00Z",
            "2024-02-29T01:00:00+0100",
            "2024-03-01T00:00:00.001Z",
        ]),
        durations: strings(&["0ms", "1d", "-1d2ms", "1h30m", "24h"]),
        decimals: strings(&["0.0", "1.5", "1.50", "-0.0001"]),
        ips: strings(&["127.0.0.1", "10.0.0.0/8", "10.1.2.3", "::1", "ff00::/7"]),
        bad: [
            bad("datetime", &["2024-13-01", "x"]),
            bad("duration", &["1m1h", "-"]),
            bad("decimal", &["1."]),
            bad("ip", &["10.0.0.01"]),
        ]
        .concat(),
        tags: strings(&["t", "u"]),
    }
}

/// Pools for the edge suite: integers at and near the i64 bounds and their square root,
/// extension literals at the edge of their grammar (leap years, offsets at ±23:59,
/// negative durations, unit mixes, decimal and duration overflow, IP prefixes), and
/// strings with the characters `like` and the Cedar lexer treat specially.
fn edge_pools() -> Pools {
    Pools {
        longs: vec![
            i64::MAX,
            i64::MIN,
            i64::MAX - 1,
            i64::MIN + 1,
            0,
            1,
            -1,
            2,
            -2,
            1 << 62,
            -(1 << 62),
            3_037_000_499,
            3_037_000_500,
            -3_037_000_500,
            86_400_000,
        ],
        strings: strings(&[
            "",
            "a",
            "*",
            "a*b",
            "\\",
            "\"",
            "é",
            "\u{1F600}",
            "hello*world",
            "\u{0}",
            "2024-02-29",
            "1.5",
            "1d",
            "127.0.0.1",
        ]),
        datetimes: strings(&[
            "2024-02-29",
            "2024-02-29T23:59:59.999+2359",
            "2024-03-01T00:00:00Z",
            "0000-01-01",
            "9999-12-31T23:59:59.999-2359",
            "1969-12-31T23:59:59.999Z",
            "1970-01-01T00:00:00Z",
            "1970-01-01T00:00:00.000-0001",
            "2000-02-29T12:00:00+1200",
        ]),
        durations: strings(&[
            "0ms",
            "1d2h3m4s5ms",
            "-1d",
            "-1d2ms",
            "9223372036854775807ms",
            "-9223372036854775808ms",
            "106751991167d",
            "1ms",
            "60m",
            "1h",
            "-24h",
            "2562047788015h",
        ]),
        decimals: strings(&[
            "0.0",
            "1.0",
            "-1.0",
            "1.2345",
            "922337203685477.5807",
            "-922337203685477.5808",
            "1.5",
            "0.0001",
            "-0.0001",
            "-0.0",
        ]),
        ips: strings(&[
            "127.0.0.1",
            "127.0.0.1/4",
            "10.0.0.0/8",
            "::1",
            "ff00::/7",
            "0.0.0.0/0",
            "::/0",
            "224.0.0.1",
            "10.1.2.3/32",
            "1:2:3:4:5:6:7:8/128",
        ]),
        bad: [
            bad(
                "datetime",
                &[
                    "2023-02-29",
                    "1900-02-29",
                    "2024-01-01T24:00:00Z",
                    "2024-01-01T10:00:60Z",
                    "2024-1-01",
                    "2024-01-01T10:00:00",
                    "2024-01-01T10:00:00.12Z",
                    "2024-01-01T10:00:00+2400",
                    "2024-01-01T10:00:00-0160",
                    "-0001-01-01",
                    "",
                    "2024-01-01 ",
                ],
            ),
            bad(
                "duration",
                &[
                    "",
                    "-",
                    "1m1h",
                    "1ms1s",
                    "1d1d",
                    "106751991168d",
                    "9223372036854775808ms",
                    "-9223372036854775809ms",
                    "1x",
                    "1.5h",
                    "d",
                    "--1d",
                    "1d-1h",
                    "1D",
                ],
            ),
            bad(
                "decimal",
                &[
                    "1.23456",
                    "1.",
                    "922337203685477.5808",
                    "-922337203685477.5809",
                    ".5",
                    "1",
                    "abc",
                    "1.0.0",
                    "+1.0",
                    "",
                ],
            ),
            bad(
                "ip",
                &[
                    "10.0.0.1/33",
                    "10.0.0.01",
                    "10.0.0.1/08",
                    "256.0.0.1",
                    "::g",
                    "",
                    "1.2.3",
                    "::1/129",
                    "::ffff:127.0.0.1",
                    "10.0.0.1 ",
                ],
            ),
        ]
        .concat(),
        tags: strings(&["t", "", "*"]),
    }
}

// ===================================================================== values (JSON)

fn uid_json(ty: &str, id: &str) -> Json {
    json!({"type": ty, "id": id})
}

fn extn(f: &str, arg: &str) -> Json {
    json!({"__extn": {"fn": f, "arg": arg}})
}

/// A value of type `ty` in Cedar's JSON form. `loose`: sometimes a value of another
/// type instead (for stores parsed without a schema).
fn value(ty: &AttrTy, s: &Arc<SchemaDesc>, p: &Arc<Pools>, loose: bool) -> BoxedStrategy<Json> {
    let exact = match ty {
        AttrTy::Bool => any::<bool>().prop_map(Json::from).boxed(),
        AttrTy::Long => prop_oneof![
            3 => select(p.longs.clone()),
            1 => any::<i64>(),
        ]
        .prop_map(Json::from)
        .boxed(),
        AttrTy::Str => select(p.strings.clone()).prop_map(Json::from).boxed(),
        AttrTy::Set(e) => vec(value(e, s, p, loose), 0..4)
            .prop_map(Json::from)
            .boxed(),
        AttrTy::Record(fields) => record_value(fields, s, p, loose),
        AttrTy::Entity(t) => {
            let t = t.clone();
            select(s.ids_of(&t))
                .prop_map(move |id| json!({"__entity": uid_json(&t, &id)}))
                .boxed()
        }
        AttrTy::Datetime => ext_value("datetime", &p.datetimes),
        AttrTy::Duration => ext_value("duration", &p.durations),
        AttrTy::Decimal => ext_value("decimal", &p.decimals),
        AttrTy::Ip => ext_value("ip", &p.ips),
    };
    if loose {
        // Any scalar of another type.
        let other = prop_oneof![
            any::<bool>().prop_map(Json::from),
            select(p.longs.clone()).prop_map(Json::from),
            select(p.strings.clone()).prop_map(Json::from),
            ext_value("datetime", &p.datetimes),
            Just(json!([])),
            Just(json!({})),
        ];
        prop_oneof![6 => exact, 1 => other].boxed()
    } else {
        exact
    }
}

fn ext_value(f: &'static str, pool: &[String]) -> BoxedStrategy<Json> {
    select(pool.to_vec()).prop_map(move |a| extn(f, &a)).boxed()
}

/// A record with these fields: required ones always, optional ones sometimes; `loose`
/// also drops required ones and adds unknown ones now and then.
fn record_value(
    fields: &[AttrDesc],
    s: &Arc<SchemaDesc>,
    p: &Arc<Pools>,
    loose: bool,
) -> BoxedStrategy<Json> {
    let mut parts: Vec<BoxedStrategy<Option<(String, Json)>>> = fields
        .iter()
        .map(|f| {
            let name = f.name.clone();
            let v = value(&f.ty, s, p, loose).prop_map(move |v| (name.clone(), v));
            if f.required && !loose {
                v.prop_map(Some).boxed()
            } else if f.required {
                proptest::option::weighted(0.95, v).boxed()
            } else {
                proptest::option::of(v).boxed()
            }
        })
        .collect();
    if loose {
        parts.push(
            proptest::option::weighted(
                0.1,
                select(p.longs.clone()).prop_map(|n| ("extra".to_string(), Json::from(n))),
            )
            .boxed(),
        );
    }
    parts
        .prop_map(|kvs| Json::Object(kvs.into_iter().flatten().collect::<Map<_, _>>()))
        .boxed()
}

/// The entity store: every id of every (non-enum) entity type, each present or absent,
/// with attributes of its type and parents among the ids of its parent types. A parent of
/// the same type comes later in the id order, so the hierarchy has no cycle (the schemas'
/// type hierarchies have none). `loose` adds tags and parents of any later type;
/// `actions` adds the action entities (parsing with a schema adds them otherwise).
fn entities(
    s: &Arc<SchemaDesc>,
    p: &Arc<Pools>,
    loose: bool,
    actions: bool,
) -> BoxedStrategy<Json> {
    let mut all: Vec<BoxedStrategy<Option<Json>>> = Vec::new();
    for (k, e) in s.entities.iter().enumerate().filter(|(_, e)| !e.is_enum) {
        for (i, id) in e.ids.iter().enumerate() {
            let parent_types: Vec<&str> = if loose {
                s.entities[k..].iter().map(|x| x.name.as_str()).collect()
            } else {
                e.parents.iter().map(String::as_str).collect()
            };
            let candidates: Vec<(String, String)> = parent_types
                .iter()
                .flat_map(|t| {
                    s.ids_of(t)
                        .into_iter()
                        .enumerate()
                        .filter(|(j, _)| *t != e.name || *j > i)
                        .map(|(_, pid)| (t.to_string(), pid))
                })
                .collect();
            let n = candidates.len();
            let parents = subsequence(candidates, 0..=n);
            let tags = if loose {
                proptest::option::weighted(
                    0.3,
                    vec(
                        (select(p.tags.clone()), value(&AttrTy::Long, s, p, true)),
                        0..3,
                    ),
                )
                .boxed()
            } else {
                Just(None).boxed()
            };
            let (ty, id) = (e.name.clone(), id.clone());
            let entity = (record_value(&e.attrs, s, p, loose), parents, tags).prop_map(
                move |(attrs, parents, tags)| {
                    let parents: Vec<Json> = parents.iter().map(|(t, i)| uid_json(t, i)).collect();
                    let mut e =
                        json!({"uid": uid_json(&ty, &id), "attrs": attrs, "parents": parents});
                    if let Some(tags) = tags {
                        e["tags"] = Json::Object(tags.into_iter().collect());
                    }
                    e
                },
            );
            all.push(proptest::option::weighted(0.85, entity).boxed());
        }
    }
    let actions: Vec<Json> = if actions {
        s.actions
            .iter()
            .map(|(a, groups)| {
                let parents: Vec<Json> = groups.iter().map(|g| uid_json("Action", g)).collect();
                json!({"uid": uid_json("Action", a), "attrs": {}, "parents": parents})
            })
            .collect()
    } else {
        Vec::new()
    };
    all.prop_map(move |es| {
        Json::Array(
            es.into_iter()
                .flatten()
                .chain(actions.iter().cloned())
                .collect(),
        )
    })
    .boxed()
}

// ===================================================================== expressions

/// The types the expression generator aims at (it also builds ill-typed expressions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ty {
    Bool,
    Long,
    Str,
    Entity,
    Set,
    Record,
    Datetime,
    Duration,
    Decimal,
    Ip,
}

const TYS: [Ty; 10] = [
    Ty::Bool,
    Ty::Long,
    Ty::Str,
    Ty::Entity,
    Ty::Set,
    Ty::Record,
    Ty::Datetime,
    Ty::Duration,
    Ty::Decimal,
    Ty::Ip,
];

fn ty_of(t: &AttrTy) -> Ty {
    match t {
        AttrTy::Bool => Ty::Bool,
        AttrTy::Long => Ty::Long,
        AttrTy::Str => Ty::Str,
        AttrTy::Set(_) => Ty::Set,
        AttrTy::Record(_) => Ty::Record,
        AttrTy::Entity(_) => Ty::Entity,
        AttrTy::Datetime => Ty::Datetime,
        AttrTy::Duration => Ty::Duration,
        AttrTy::Decimal => Ty::Decimal,
        AttrTy::Ip => Ty::Ip,
    }
}

/// A Cedar expression, printed fully parenthesised.
#[derive(Clone, Debug)]
enum Ex {
    Bool(bool),
    Long(i64),
    Str(String),
    Var(&'static str),
    Uid(String, String),
    /// An extension constructor on a string literal: `datetime("...")`.
    Ext(&'static str, String),
    /// An extension constructor on any expression.
    ExtOf(&'static str, Box<Ex>),
    /// `e.a` (false) or `e["a"]` (true).
    Attr(Box<Ex>, String, bool),
    /// `e has a` or `e has a.b`.
    Has(Box<Ex>, Vec<String>),
    /// `e like "pattern"` (the pattern as written between the quotes).
    Like(Box<Ex>, String),
    Is(Box<Ex>, String, Option<Box<Ex>>),
    Not(Box<Ex>),
    Neg(Box<Ex>),
    Bin(&'static str, Box<Ex>, Box<Ex>),
    Call(Box<Ex>, &'static str, Vec<Ex>),
    If(Box<Ex>, Box<Ex>, Box<Ex>),
    Set(Vec<Ex>),
    Record(Vec<(String, Ex)>),
}

/// A Cedar string literal.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Ex {
    fn atomic(&self) -> bool {
        match self {
            Ex::Long(n) => *n >= 0,
            Ex::Bool(_)
            | Ex::Str(_)
            | Ex::Var(_)
            | Ex::Uid(..)
            | Ex::Ext(..)
            | Ex::ExtOf(..)
            | Ex::Set(_)
            | Ex::Record(_)
            | Ex::Attr(..)
            | Ex::Call(..) => true,
            _ => false,
        }
    }
}

/// A subexpression: in parentheses unless atomic.
struct Sub<'a>(&'a Ex);

impl fmt::Display for Sub<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.atomic() {
            write!(f, "{}", self.0)
        } else {
            write!(f, "({})", self.0)
        }
    }
}

impl fmt::Display for Ex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ex::Bool(b) => write!(f, "{b}"),
            Ex::Long(n) => write!(f, "{n}"),
            Ex::Str(s) => write!(f, "{}", quote(s)),
            Ex::Var(v) => write!(f, "{v}"),
            Ex::Uid(t, id) => write!(f, "{t}::{}", quote(id)),
            Ex::Ext(func, arg) => write!(f, "{func}({})", quote(arg)),
            Ex::ExtOf(func, arg) => write!(f, "{func}({arg})"),
            Ex::Attr(e, a, false) => write!(f, "{}.{a}", Sub(e)),
            Ex::Attr(e, a, true) => write!(f, "{}[{}]", Sub(e), quote(a)),
            Ex::Has(e, path) => write!(f, "{} has {}", Sub(e), path.join(".")),
            Ex::Like(e, pat) => write!(f, "{} like \"{pat}\"", Sub(e)),
            Ex::Is(e, t, None) => write!(f, "{} is {t}", Sub(e)),
            Ex::Is(e, t, Some(x)) => write!(f, "{} is {t} in {}", Sub(e), Sub(x)),
            Ex::Not(e) => write!(f, "!{}", Sub(e)),
            Ex::Neg(e) => write!(f, "-{}", Sub(e)),
            Ex::Bin(op, l, r) => write!(f, "{} {op} {}", Sub(l), Sub(r)),
            Ex::Call(e, m, args) => {
                let args: Vec<String> = args.iter().map(ToString::to_string).collect();
                write!(f, "{}.{m}({})", Sub(e), args.join(", "))
            }
            Ex::If(c, t, e) => write!(f, "if {c} then {t} else {e}"),
            Ex::Set(es) => {
                let es: Vec<String> = es.iter().map(ToString::to_string).collect();
                write!(f, "[{}]", es.join(", "))
            }
            Ex::Record(kvs) => {
                let kvs: Vec<String> = kvs.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                write!(f, "{{{}}}", kvs.join(", "))
            }
        }
    }
}

fn bx(e: Ex) -> Box<Ex> {
    Box::new(e)
}

/// What expressions may name: attribute names by type, entity types, uids (absent ones
/// included), action ids, and the literal pools.
#[derive(Debug)]
struct Vocab {
    attrs: BTreeMap<Ty, Vec<String>>,
    all_attrs: Vec<String>,
    types: Vec<String>,
    uids: Vec<(String, String)>,
    actions: Vec<String>,
    pools: Arc<Pools>,
}

impl Vocab {
    fn new(s: &SchemaDesc, pools: Arc<Pools>) -> Vocab {
        fn collect(attrs: &[AttrDesc], out: &mut BTreeMap<Ty, BTreeSet<String>>) {
            for a in attrs {
                out.entry(ty_of(&a.ty)).or_default().insert(a.name.clone());
                if let AttrTy::Record(fields) = &a.ty {
                    collect(fields, out);
                }
            }
        }
        let mut by_ty = BTreeMap::new();
        for e in &s.entities {
            collect(&e.attrs, &mut by_ty);
        }
        collect(&s.context, &mut by_ty);
        let mut all: BTreeSet<String> = by_ty.values().flatten().cloned().collect();
        // an attribute no entity has
        all.insert("nope".to_string());
        let mut types: Vec<String> = s.entities.iter().map(|e| e.name.clone()).collect();
        types.push("Action".into());
        Vocab {
            attrs: by_ty
                .into_iter()
                .map(|(t, names)| (t, names.into_iter().collect()))
                .collect(),
            all_attrs: all.into_iter().collect(),
            types,
            uids: s.uids(),
            actions: s.action_ids().collect(),
            pools,
        }
    }

    /// Attribute names of type `t` (any name if the schema has none of that type).
    fn attrs_of(&self, t: Ty) -> Vec<String> {
        self.attrs
            .get(&t)
            .cloned()
            .unwrap_or_else(|| self.all_attrs.clone())
    }
}

/// A `like` pattern, as written between the quotes: literal characters (escaped as
/// needed, `\*` for a literal star) and wildcards.
fn pattern() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            select(vec![
                "a",
                "b",
                "\\*",
                "\\\\",
                "\\\"",
                "é",
                "\u{1F600}",
                " ",
                "\\u{61}"
            ]),
            Just("*"),
        ],
        0..5,
    )
    .prop_map(|parts| parts.concat())
}

/// A string: from the pool or a few characters.
fn string_lit(p: &Pools) -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(p.strings.clone()),
        1 => vec(select(vec!['a', 'b', '*', '\\', '"', 'é', '\u{1F600}']), 0..4)
            .prop_map(|cs| cs.into_iter().collect::<String>()),
    ]
    .boxed()
}

/// An extension literal of function `f`: valid ones mostly, and invalid ones.
fn ext_lit(f: &'static str, valid: &[String], p: &Pools) -> BoxedStrategy<Ex> {
    let bad: Vec<String> = p
        .bad
        .iter()
        .filter(|(g, _)| *g == f)
        .map(|(_, a)| a.clone())
        .collect();
    let valid = select(valid.to_vec()).prop_map(move |a| Ex::Ext(f, a));
    if bad.is_empty() {
        valid.boxed()
    } else {
        prop_oneof![4 => valid, 1 => select(bad).prop_map(move |a| Ex::Ext(f, a))].boxed()
    }
}

/// Expression strategies, one per [`Ty`] (indexed by `Ty as usize`), `depth` levels of
/// operators deep. Level 0 is literals, variables and attributes of variables; each level
/// combines expressions of the level below. Earlier alternatives are simpler, so
/// shrinking moves towards them.
fn expressions(v: &Arc<Vocab>, depth: usize) -> Vec<BoxedStrategy<Ex>> {
    let p = &v.pools;
    let uid = select(v.uids.clone()).prop_map(|(t, i)| Ex::Uid(t, i));
    let var = select(vec!["principal", "resource", "context", "action"]).prop_map(Ex::Var);
    let base0 = prop_oneof![4 => var.clone(), 1 => uid.clone()].boxed();
    // `base.a` / `base["a"]` with `a` an attribute of type `t`.
    let attr = |base: BoxedStrategy<Ex>, t: Ty| {
        (base, select(v.attrs_of(t)), prop::bool::weighted(0.1))
            .prop_map(|(b, a, idx)| Ex::Attr(bx(b), a, idx))
            .boxed()
    };
    let long = prop_oneof![
        3 => select(p.longs.clone()),
        1 => any::<i64>(),
        1 => -3i64..=3,
    ]
    .prop_map(Ex::Long);
    let leaves: Vec<BoxedStrategy<Ex>> = TYS
        .iter()
        .map(|&t| {
            let own: BoxedStrategy<Ex> = match t {
                Ty::Bool => any::<bool>().prop_map(Ex::Bool).boxed(),
                Ty::Long => long.clone().boxed(),
                Ty::Str => string_lit(p).prop_map(Ex::Str).boxed(),
                Ty::Entity => prop_oneof![var.clone(), uid.clone()].boxed(),
                Ty::Set => Just(Ex::Set(Vec::new())).boxed(),
                Ty::Record => {
                    prop_oneof![Just(Ex::Var("context")), Just(Ex::Record(Vec::new()))].boxed()
                }
                Ty::Datetime => ext_lit("datetime", &p.datetimes, p),
                Ty::Duration => ext_lit("duration", &p.durations, p),
                Ty::Decimal => ext_lit("decimal", &p.decimals, p),
                Ty::Ip => ext_lit("ip", &p.ips, p),
            };
            prop_oneof![2 => own, 1 => attr(base0.clone(), t)].boxed()
        })
        .collect();
    let mut level = leaves.clone();
    for _ in 0..depth {
        let c = |t: Ty| level[t as usize].clone();
        let any = Union::new(level.clone()).boxed();
        let cond = |t: Ty| {
            (c(Ty::Bool), c(t), c(t))
                .prop_map(|(i, th, el)| Ex::If(bx(i), bx(th), bx(el)))
                .boxed()
        };
        let base = prop_oneof![c(Ty::Entity), c(Ty::Record)].boxed();
        let get_tag = (c(Ty::Entity), string_lit(p))
            .prop_map(|(e, t)| Ex::Call(bx(e), "getTag", vec![Ex::Str(t)]))
            .boxed();
        let ext_of = |f: &'static str| c(Ty::Str).prop_map(move |s| Ex::ExtOf(f, bx(s))).boxed();
        let method0 = |t: Ty, ms: Vec<&'static str>| {
            (c(t), select(ms))
                .prop_map(|(e, m)| Ex::Call(bx(e), m, Vec::new()))
                .boxed()
        };
        let method1 = |t: Ty, a: BoxedStrategy<Ex>, ms: Vec<&'static str>| {
            (c(t), a, select(ms))
                .prop_map(|(e, a, m)| Ex::Call(bx(e), m, vec![a]))
                .boxed()
        };
        let bin = |ops: Vec<&'static str>, l: BoxedStrategy<Ex>, r: BoxedStrategy<Ex>| {
            (select(ops), l, r)
                .prop_map(|(op, l, r)| Ex::Bin(op, bx(l), bx(r)))
                .boxed()
        };
        // Pairs of one type, for comparisons.
        let same = |ts: &[Ty]| {
            Union::new(ts.iter().map(|&t| (c(t), c(t)).boxed()))
                .prop_map(|(l, r)| (l, r))
                .boxed()
        };
        let next: Vec<BoxedStrategy<Ex>> = TYS
            .iter()
            .map(|&t| {
                let mut alts: Vec<(u32, BoxedStrategy<Ex>)> = vec![
                    (6, leaves[t as usize].clone()),
                    (2, attr(base.clone(), t)),
                    (1, cond(t)),
                ];
                match t {
                    Ty::Bool => alts.extend([
                        (2, c(Ty::Bool).prop_map(|e| Ex::Not(bx(e))).boxed()),
                        (4, bin(vec!["&&", "||"], c(Ty::Bool), c(Ty::Bool))),
                        (
                            3,
                            (
                                select(vec!["==", "!="]),
                                prop_oneof![
                                    3 => same(&TYS),
                                    1 => (any.clone(), any.clone()),
                                ],
                            )
                                .prop_map(|(op, (l, r))| Ex::Bin(op, bx(l), bx(r)))
                                .boxed(),
                        ),
                        (
                            3,
                            (
                                select(vec!["<", "<=", ">", ">="]),
                                prop_oneof![
                                    4 => same(&[Ty::Long, Ty::Datetime, Ty::Duration, Ty::Decimal]),
                                    1 => (any.clone(), any.clone()),
                                ],
                            )
                                .prop_map(|(op, (l, r))| Ex::Bin(op, bx(l), bx(r)))
                                .boxed(),
                        ),
                        (
                            3,
                            bin(
                                vec!["in"],
                                c(Ty::Entity),
                                prop_oneof![c(Ty::Entity), c(Ty::Set), any.clone()].boxed(),
                            ),
                        ),
                        (
                            2,
                            (
                                c(Ty::Entity),
                                select(v.types.clone()),
                                proptest::option::of(c(Ty::Entity)),
                            )
                                .prop_map(|(e, t, i)| Ex::Is(bx(e), t, i.map(bx)))
                                .boxed(),
                        ),
                        (
                            2,
                            (c(Ty::Str), pattern())
                                .prop_map(|(e, p)| Ex::Like(bx(e), p))
                                .boxed(),
                        ),
                        (
                            3,
                            (base.clone(), vec(select(v.all_attrs.clone()), 1..=2))
                                .prop_map(|(e, path)| Ex::Has(bx(e), path))
                                .boxed(),
                        ),
                        (2, method1(Ty::Set, any.clone(), vec!["contains"])),
                        (
                            2,
                            method1(Ty::Set, c(Ty::Set), vec!["containsAll", "containsAny"]),
                        ),
                        (1, method0(Ty::Set, vec!["isEmpty"])),
                        (
                            1,
                            method1(
                                Ty::Decimal,
                                c(Ty::Decimal),
                                vec![
                                    "lessThan",
                                    "lessThanOrEqual",
                                    "greaterThan",
                                    "greaterThanOrEqual",
                                ],
                            ),
                        ),
                        (
                            1,
                            method0(
                                Ty::Ip,
                                vec!["isIpv4", "isIpv6", "isLoopback", "isMulticast"],
                            ),
                        ),
                        (1, method1(Ty::Ip, c(Ty::Ip), vec!["isInRange"])),
                        (
                            1,
                            (c(Ty::Entity), string_lit(p))
                                .prop_map(|(e, t)| Ex::Call(bx(e), "hasTag", vec![Ex::Str(t)]))
                                .boxed(),
                        ),
                        // ill-typed on purpose
                        (1, any.clone()),
                    ]),
                    Ty::Long => alts.extend([
                        (4, bin(vec!["+", "-", "*"], c(Ty::Long), c(Ty::Long))),
                        (1, c(Ty::Long).prop_map(|e| Ex::Neg(bx(e))).boxed()),
                        (
                            2,
                            method0(
                                Ty::Duration,
                                vec![
                                    "toMilliseconds",
                                    "toSeconds",
                                    "toMinutes",
                                    "toHours",
                                    "toDays",
                                ],
                            ),
                        ),
                        (1, get_tag.clone()),
                        (1, bin(vec!["+", "*"], any.clone(), any.clone())),
                    ]),
                    Ty::Str | Ty::Entity => alts.push((1, get_tag.clone())),
                    Ty::Set => alts.extend([
                        (3, vec(any.clone(), 1..4).prop_map(Ex::Set).boxed()),
                        (
                            2,
                            Union::new([Ty::Long, Ty::Str, Ty::Entity].map(|t| vec(c(t), 1..4)))
                                .prop_map(Ex::Set)
                                .boxed(),
                        ),
                    ]),
                    Ty::Record => alts.push((
                        3,
                        vec((select(v.all_attrs.clone()), any.clone()), 1..4)
                            .prop_map(|kvs| {
                                // keys once each, as Cedar requires
                                let mut seen = BTreeSet::new();
                                Ex::Record(
                                    kvs.into_iter()
                                        .filter(|(k, _)| seen.insert(k.clone()))
                                        .collect(),
                                )
                            })
                            .boxed(),
                    )),
                    Ty::Datetime => alts.extend([
                        (3, method1(Ty::Datetime, c(Ty::Duration), vec!["offset"])),
                        (1, method0(Ty::Datetime, vec!["toDate"])),
                        (1, ext_of("datetime")),
                    ]),
                    Ty::Duration => alts.extend([
                        (
                            2,
                            method1(Ty::Datetime, c(Ty::Datetime), vec!["durationSince"]),
                        ),
                        (1, method0(Ty::Datetime, vec!["toTime"])),
                        (1, ext_of("duration")),
                    ]),
                    Ty::Decimal => alts.push((1, ext_of("decimal"))),
                    Ty::Ip => alts.push((1, ext_of("ip"))),
                }
                Union::new_weighted(alts).boxed()
            })
            .collect();
        level = next;
    }
    level
}

// ===================================================================== policies

/// A scope constraint on the principal or the resource.
fn scope(var: &'static str, v: &Arc<Vocab>) -> BoxedStrategy<String> {
    let uid = select(v.uids.clone()).prop_map(|(t, i)| format!("{t}::{}", quote(&i)));
    let ty = select(v.types.clone());
    prop_oneof![
        10 => Just(var.to_string()),
        1 => uid.clone().prop_map(move |u| format!("{var} == {u}")),
        1 => uid.clone().prop_map(move |u| format!("{var} in {u}")),
        2 => ty.clone().prop_map(move |t| format!("{var} is {t}")),
        1 => (ty, uid).prop_map(move |(t, u)| format!("{var} is {t} in {u}")),
    ]
    .boxed()
}

/// A scope constraint on the action.
fn action_scope(v: &Arc<Vocab>) -> BoxedStrategy<String> {
    let a = select(v.actions.clone()).prop_map(|a| format!("Action::{}", quote(&a)));
    prop_oneof![
        8 => Just("action".to_string()),
        2 => a.clone().prop_map(|a| format!("action == {a}")),
        1 => a.clone().prop_map(|a| format!("action in {a}")),
        1 => vec(a, 0..3).prop_map(|l| format!("action in [{}]", l.join(", "))),
    ]
    .boxed()
}

/// A policy in Cedar text: effect, scope (mostly unconstrained, so that conditions get
/// evaluated), and up to two `when`/`unless` clauses.
fn policy(v: &Arc<Vocab>, depth: usize) -> BoxedStrategy<String> {
    let cond = expressions(v, depth).swap_remove(Ty::Bool as usize);
    (
        any::<bool>(),
        scope("principal", v),
        action_scope(v),
        scope("resource", v),
        vec((any::<bool>(), cond), 0..=2),
    )
        .prop_map(|(forbid, p, a, r, conds)| {
            let mut text = format!(
                "{}({p}, {a}, {r})",
                if forbid { "forbid" } else { "permit" }
            );
            for (when, c) in conds {
                let kw = if when { "when" } else { "unless" };
                text.push_str(&format!("\n  {kw} {{ {c} }}"));
            }
            text.push(';');
            text
        })
        .boxed()
}

// ===================================================================== cases

/// One request: principal, action and resource uids (type, id), and the context JSON.
#[derive(Clone)]
struct Req {
    principal: (String, String),
    action: String,
    resource: (String, String),
    context: Json,
}

impl fmt::Debug for Req {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "principal {}::{}, action Action::{}, resource {}::{}, context {}",
            self.principal.0,
            quote(&self.principal.1),
            quote(&self.action),
            self.resource.0,
            quote(&self.resource.1),
            self.context
        )
    }
}

/// One generated case: policies (bundled ones by index, generated ones as text), the
/// entity store as JSON, whether it is parsed with the schema, and requests.
#[derive(Clone)]
struct Case {
    bundled: Vec<usize>,
    policies: Vec<String>,
    entities: Json,
    validate: bool,
    requests: Vec<Req>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "bundled policies {:?}", self.bundled)?;
        for (i, p) in self.policies.iter().enumerate() {
            writeln!(f, "@id(\"policy{i}\")\n{p}")?;
        }
        writeln!(
            f,
            "entities (parsed {} the schema): {}",
            if self.validate { "with" } else { "without" },
            serde_json::to_string_pretty(&self.entities).unwrap_or_default()
        )?;
        for r in &self.requests {
            writeln!(f, "request {r:?}")?;
        }
        Ok(())
    }
}

fn requests(s: &Arc<SchemaDesc>, p: &Arc<Pools>, loose: bool) -> BoxedStrategy<Vec<Req>> {
    let uids: Vec<(String, String)> = s
        .entities
        .iter()
        .flat_map(|e| s.ids_of(&e.name).into_iter().map(|id| (e.name.clone(), id)))
        .collect();
    let actions: Vec<String> = s.action_ids().collect();
    vec(
        (
            select(uids.clone()),
            select(actions),
            select(uids),
            record_value(&s.context, s, p, loose),
        )
            .prop_map(|(principal, action, resource, context)| Req {
                principal,
                action,
                resource,
                context,
            }),
        1..=4,
    )
    .boxed()
}

/// Cases over `s`: `bundled` policies to draw subsets from (by index), up to
/// `max_policies` generated ones with conditions `depth` operators deep.
fn cases(
    s: Arc<SchemaDesc>,
    p: Arc<Pools>,
    bundled: usize,
    max_policies: usize,
    depth: usize,
    loose: bool,
) -> BoxedStrategy<Case> {
    let v = Arc::new(Vocab::new(&s, p.clone()));
    // A store that conforms to the schema, parsed with it (Cedar checks it and adds the
    // action entities) or without it (cheaper; the action entities are in the JSON); and
    // if `loose`, a store that need not conform, parsed without the schema.
    let mut stores = vec![
        (
            1,
            entities(&s, &p, false, false)
                .prop_map(|e| (true, e))
                .boxed(),
        ),
        (
            2,
            entities(&s, &p, false, true)
                .prop_map(|e| (false, e))
                .boxed(),
        ),
    ];
    if loose {
        stores.push((
            2,
            entities(&s, &p, true, true)
                .prop_map(|e| (false, e))
                .boxed(),
        ));
    }
    let stores = Union::new_weighted(stores);
    (
        subsequence((0..bundled).collect::<Vec<_>>(), 0..=bundled),
        vec(policy(&v, depth), 0..=max_policies),
        stores,
        requests(&s, &p, loose),
    )
        .prop_map(|(bundled, policies, (validate, entities), requests)| Case {
            bundled,
            policies,
            entities,
            validate,
            requests,
        })
        .boxed()
}

fn ids<'a>(it: impl Iterator<Item = &'a PolicyId>) -> BTreeSet<String> {
    it.map(ToString::to_string).collect()
}

fn uid(t: &str, id: &str) -> EntityUid {
    EntityUid::from_json(uid_json(t, id)).expect("uid")
}

/// Decides every request of `case` with the compiled evaluator and with Cedar's
/// authorizer, and fails on any difference. A generated policy Cedar cannot parse
/// rejects the case.
fn check(case: &Case, schema: Option<&Schema>, bundled: &[Policy]) -> Result<(), TestCaseError> {
    let mut set = PolicySet::new();
    for &i in &case.bundled {
        set.add(bundled[i].clone()).expect("bundled policy");
    }
    for (i, text) in case.policies.iter().enumerate() {
        match Policy::parse(Some(PolicyId::new(format!("policy{i}"))), text) {
            Ok(p) => set.add(p).expect("distinct ids"),
            Err(e) => {
                return Err(TestCaseError::reject(format!(
                    "generated policy does not parse: {e}\n{text}"
                )))
            }
        }
    }
    let entities = Entities::from_json_value(
        case.entities.clone(),
        if case.validate { schema } else { None },
    )
    .unwrap_or_else(|e| panic!("generated entities are refused: {e:?}\n{case:?}"));
    let compiled = CompiledPolicies::compile(&set).expect("static policies compile");
    let store = Store::from_entities(&compiled, &entities);
    prop_assert!(
        store.is_ok(),
        "Store::from_entities: {:?}\n{case:?}",
        store.err()
    );
    let store = store.expect("checked");
    let authorizer = Authorizer::new();
    for r in &case.requests {
        let context = Context::from_json_value(r.context.clone(), None).expect("context");
        let request = Request::new(
            uid(&r.principal.0, &r.principal.1),
            uid("Action", &r.action),
            uid(&r.resource.0, &r.resource.1),
            context,
            None,
        )
        .expect("request");
        let expected = authorizer.is_authorized(&request, &set, &entities);
        let query = Query::from_request(&request, &store);
        prop_assert!(
            query.is_ok(),
            "Query::from_request: {:?}\n{case:?}",
            query.err()
        );
        let query = query.expect("checked");
        let got = compiled.is_authorized(&query);
        prop_assert!(got.is_ok(), "is_authorized: {:?}\n{case:?}", got.err());
        let got = got.expect("checked");
        let expected_errors: BTreeSet<String> = expected
            .diagnostics()
            .errors()
            .map(|e| match e {
                AuthorizationError::PolicyEvaluationError(e) => e.policy_id().to_string(),
            })
            .collect();
        let show = || {
            let errors: Vec<String> = expected
                .diagnostics()
                .errors()
                .map(ToString::to_string)
                .collect();
            format!(
                "\npolicies:\n{set}\nentities: {}\nrequest: {r:?}\ncedar errors: {errors:?}",
                serde_json::to_string_pretty(&case.entities).unwrap_or_default()
            )
        };
        prop_assert_eq!(got.decision, expected.decision(), "decision{}", show());
        prop_assert_eq!(
            ids(got.reason.iter()),
            ids(expected.diagnostics().reason()),
            "determining policies{}",
            show()
        );
        prop_assert_eq!(
            ids(got.errors.iter()),
            expected_errors,
            "erroring policies{}",
            show()
        );
        // Every condition, specialised to the request's principal and action (with the
        // resource's data left to be read), evaluates as the condition does.
        for v in compiled.views() {
            let Some((conjuncts, _)) = v.native else {
                continue;
            };
            for c in conjuncts {
                let mut known = |u: u32| u != query.resource;
                let specialised = specialize_expr(c, &query, &mut known);
                prop_assert_eq!(
                    eval_expr(&specialised, &query),
                    eval_expr(c, &query),
                    "{:?}\nspecialised: {:?}{}",
                    c,
                    specialised,
                    show()
                );
                // And with the context folded in too.
                let for_context = specialize_for_context(c, &query, &mut known);
                prop_assert_eq!(
                    eval_expr(&for_context, &query),
                    eval_expr(c, &query),
                    "{:?}\nspecialised for the context: {:?}{}",
                    c,
                    for_context,
                    show()
                );
            }
        }
    }
    Ok(())
}

// ===================================================================== suite 1: bundled

/// The bundled schema, its description (with the domain's ids: field names, a few
/// members, CLPs and regions) and policies.
struct Bundled {
    schema: Schema,
    desc: Arc<SchemaDesc>,
    policies: Vec<Policy>,
}

fn bundled() -> &'static Bundled {
    static B: OnceLock<Bundled> = OnceLock::new();
    B.get_or_init(|| {
        // A real policy set over a real schema: the party policies of the workspace's
        // root crate, read as Cedar text (no domain code involved).
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies");
        let text =
            std::fs::read_to_string(format!("{dir}/schema.cedarschema")).expect("schema file");
        let (fragment, _) = SchemaFragment::from_cedarschema_str(&text).expect("schema");
        let schema = Schema::from_cedarschema_str(&text).expect("schema").0;
        let mut desc = desc_from_schema_json(&fragment.to_json_value().expect("schema json"));
        // Two entities of the types whose identity the policies compare, one of the
        // others, and the fields the policies name.
        for e in desc.entities.iter_mut().filter(|e| !e.is_enum) {
            e.ids = match e.name.as_str() {
                "Field" => strings(&["name", "phone", "email", "address", "ethnicity"]),
                "Member" | "Clp" | "Region" | "Campaign" | "Election" => strings(&["a", "b"]),
                _ => strings(&["a"]),
            };
        }
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("policy directory")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
            .collect();
        files.sort();
        let all: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("policy file"))
            .collect::<Vec<_>>()
            .join("\n");
        let set: cedar_policy::PolicySet = all.parse().expect("bundled policies parse");
        // The policies in their JSON form, each under its `@id`: the compiler reads
        // that form, which Cedar makes by parsing the text again for a policy parsed
        // from text.
        let policies = set
            .policies()
            .map(|p| {
                let id = PolicyId::new(p.annotation("id").expect("every policy has an @id"));
                Policy::from_json(Some(id), p.to_json().expect("json")).expect("policy from json")
            })
            .collect();
        Bundled {
            schema,
            desc: Arc::new(desc),
            policies,
        }
    })
}

fn bundled_cases() -> BoxedStrategy<Case> {
    let b = bundled();
    cases(
        b.desc.clone(),
        Arc::new(domain_pools()),
        b.policies.len(),
        3,
        3,
        false,
    )
}

proptest! {
    #![proptest_config(config(20))]

    /// The crate's schema and policies, and generated policies over its attributes.
    #[test]
    fn bundled_schema_matches_cedar(case in bundled_cases()) {
        let b = bundled();
        check(&case, Some(&b.schema), &b.policies)?;
    }
}

// ===================================================================== suite 2: random schemas

/// Attribute names of random schemas (identifiers, some shared across types).
const ATTR_NAMES: &[&str] = &["a", "b", "c", "owner", "when", "n", "tags", "inner"];

/// A random attribute type; entity references name one of `n` entity types.
fn attr_ty(n: usize) -> BoxedStrategy<AttrTy> {
    let leaf = prop_oneof![
        Just(AttrTy::Bool),
        Just(AttrTy::Long),
        Just(AttrTy::Str),
        (0..n).prop_map(|i| AttrTy::Entity(format!("E{i}"))),
        Just(AttrTy::Datetime),
        Just(AttrTy::Duration),
        Just(AttrTy::Decimal),
        Just(AttrTy::Ip),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| AttrTy::Set(Box::new(t))),
            attr_list(inner, 3).prop_map(AttrTy::Record),
        ]
    })
    .boxed()
}

/// Attributes with distinct names.
fn attr_list(
    ty: impl Strategy<Value = AttrTy>,
    max: usize,
) -> impl Strategy<Value = Vec<AttrDesc>> {
    vec((select(ATTR_NAMES), ty, prop::bool::weighted(0.7)), 0..=max).prop_map(|l| {
        let mut seen = BTreeSet::new();
        l.into_iter()
            .filter(|(n, _, _)| seen.insert(*n))
            .map(|(n, ty, required)| AttrDesc {
                name: n.to_string(),
                ty,
                required,
            })
            .collect()
    })
}

/// A random schema: one to four entity types `E0`.. with attributes, each a member of
/// some of the types after it (or itself), two actions in a group, a context record.
fn random_schema() -> impl Strategy<Value = SchemaDesc> {
    (1usize..=4)
        .prop_flat_map(|n| {
            let types = (0..n)
                .map(|i| {
                    (
                        attr_list(attr_ty(n), 4),
                        subsequence((i..n).collect::<Vec<_>>(), 0..=n - i),
                    )
                        .prop_map(move |(attrs, parents)| EntityDesc {
                            name: format!("E{i}"),
                            parents: parents.into_iter().map(|j| format!("E{j}")).collect(),
                            attrs,
                            ids: strings(&["a", "b"]),
                            is_enum: false,
                        })
                })
                .collect::<Vec<_>>();
            (types, attr_list(attr_ty(n), 4))
        })
        .prop_map(|(entities, context)| SchemaDesc {
            entities,
            actions: vec![
                ("group".into(), vec![]),
                ("a0".into(), vec!["group".into()]),
                ("a1".into(), vec!["group".into()]),
            ],
            context,
        })
}

fn random_schema_cases() -> impl Strategy<Value = (SchemaDesc, Case)> {
    random_schema().prop_flat_map(|s| {
        let s = Arc::new(s);
        let case = cases(s.clone(), Arc::new(generic_pools()), 0, 3, 3, true);
        (Just((*s).clone()), case)
    })
}

proptest! {
    #![proptest_config(config(15))]

    /// Random schemas, stores that conform to them or not, generated policies.
    #[test]
    fn random_schema_matches_cedar((desc, case) in random_schema_cases()) {
        let text = desc.to_cedar();
        // The schema is only needed (and parsed) for a store parsed with it.
        let schema = case.validate.then(|| {
            Schema::from_cedarschema_str(&text)
                .unwrap_or_else(|e| panic!("generated schema is refused: {e:?}\n{text}"))
                .0
        });
        check(&case, schema.as_ref(), &[])
            .map_err(|e| match e {
                TestCaseError::Fail(m) => TestCaseError::fail(format!("{m}\nschema:\n{text}")),
                reject => reject,
            })?;
    }
}

// ===================================================================== suite 3: edge values

/// A small fixed schema with every kind of attribute, for the edge suite.
fn edge_schema() -> SchemaDesc {
    let a = |name: &str, ty: AttrTy, required: bool| AttrDesc {
        name: name.into(),
        ty,
        required,
    };
    let user_attrs = vec![
        a("n", AttrTy::Long, true),
        a("s", AttrTy::Str, true),
        a("when", AttrTy::Datetime, true),
        a("wait", AttrTy::Duration, true),
        a("score", AttrTy::Decimal, true),
        a("addr", AttrTy::Ip, false),
        a("set", AttrTy::Set(Box::new(AttrTy::Long)), true),
        a(
            "rec",
            AttrTy::Record(vec![
                a("x", AttrTy::Long, true),
                a("y", AttrTy::Bool, false),
            ]),
            false,
        ),
        a("boss", AttrTy::Entity("User".into()), false),
    ];
    SchemaDesc {
        entities: vec![
            EntityDesc {
                name: "User".into(),
                parents: vec!["Group".into()],
                attrs: user_attrs.clone(),
                ids: strings(&["a", "b"]),
                is_enum: false,
            },
            EntityDesc {
                name: "Group".into(),
                parents: vec!["Group".into()],
                attrs: vec![],
                ids: strings(&["g", "h"]),
                is_enum: false,
            },
        ],
        actions: vec![("all".into(), vec![]), ("read".into(), vec!["all".into()])],
        context: user_attrs,
    }
}

fn edge_cases() -> impl Strategy<Value = Case> {
    let s = Arc::new(edge_schema());
    cases(s, Arc::new(edge_pools()), 0, 2, 4, true)
}

fn edge_schema_parsed() -> &'static Schema {
    static S: OnceLock<Schema> = OnceLock::new();
    S.get_or_init(|| {
        Schema::from_cedarschema_str(&edge_schema().to_cedar())
            .expect("edge schema")
            .0
    })
}

proptest! {
    #![proptest_config(config(65))]

    /// Edge literals, deeper expressions.
    #[test]
    fn edge_values_match_cedar(case in edge_cases()) {
        check(&case, Some(edge_schema_parsed()), &[])?;
    }
}
