//! The compiled evaluator against `cedar_policy::Authorizer`: every operator and
//! extension function and the tricky corners of Cedar's semantics, each policy decided
//! both ways for several requests (decision, determining policies, erroring policies).

use std::collections::BTreeSet;

use cedar_compiled::{CompiledPolicies, Query, Store};
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityUid, Policy, PolicyId, PolicySet,
    Request,
};

const ENTITIES: &str = r#"[
 {"uid": {"type": "User", "id": "alice"},
  "attrs": {"age": 30, "name": "alice", "labels": ["a", "b"], "nums": [1, 2, 3],
            "ip": {"__extn": {"fn": "ip", "arg": "10.0.0.1"}},
            "net": {"__extn": {"fn": "ip", "arg": "10.0.0.0/8"}},
            "score": {"__extn": {"fn": "decimal", "arg": "1.5"}},
            "born": {"__extn": {"fn": "datetime", "arg": "1990-01-01T12:00:00Z"}},
            "wait": {"__extn": {"fn": "duration", "arg": "1h30m"}},
            "rec": {"x": 1, "y": {"z": true}},
            "boss": {"__entity": {"type": "User", "id": "bob"}},
            "ghost": {"__entity": {"type": "User", "id": "nobody"}}},
  "parents": [{"type": "Group", "id": "g1"}],
  "tags": {"t1": "v1", "t2": 7}},
 {"uid": {"type": "User", "id": "bob"}, "attrs": {"age": 50}, "parents": [{"type": "Group", "id": "g2"}]},
 {"uid": {"type": "Group", "id": "g1"}, "attrs": {}, "parents": [{"type": "Group", "id": "g2"}]},
 {"uid": {"type": "Group", "id": "g2"}, "attrs": {}, "parents": []},
 {"uid": {"type": "Doc", "id": "d1"},
  "attrs": {"owner": {"__entity": {"type": "User", "id": "alice"}},
            "readers": [{"__entity": {"type": "Group", "id": "g2"}}],
            "mixed": [{"__entity": {"type": "Group", "id": "g2"}}, 1]},
  "parents": []},
 {"uid": {"type": "Action", "id": "read"}, "attrs": {}, "parents": [{"type": "Action", "id": "all"}]},
 {"uid": {"type": "Action", "id": "all"}, "attrs": {}, "parents": []}
]"#;

const CONTEXT: &str = r#"{"n": 5, "s": "hello*world", "set": [1, 2, 3], "empty": [],
  "big": 9223372036854775807, "small": -9223372036854775808,
  "when": {"__extn": {"fn": "datetime", "arg": "2024-02-29T23:59:59.999+0100"}},
  "d": {"__extn": {"fn": "duration", "arg": "-1d2ms"}},
  "users": [{"__entity": {"type": "User", "id": "alice"}}],
  "r": {"a": 1, "b": "x"}, "r2": {"b": "x", "a": 1}}"#;

/// Conditions, each the body of one `when` clause.
const CONDITIONS: &[&str] = &[
    // booleans and short-circuits
    "true",
    "false",
    "true && false || true",
    "false && (1 + \"a\" == 2)",
    "true || (1 + \"a\" == 2)",
    "true && (1 + \"a\" == 2)",
    "false || 1 == 1",
    "1 && true",
    "false || 1",
    "true && 1",
    "!true",
    "!1",
    "if true then 1 == 1 else 1 + \"a\" == 2",
    "if false then 1 + \"a\" == 2 else true",
    "if 1 then true else false",
    "if context.n > 3 then context.s like \"hello*\" else false",
    // equality across types and structures
    "1 == \"1\"",
    "1 != \"1\"",
    "principal == User::\"alice\"",
    "[1, 2, 2] == [2, 1]",
    "[1, [2]] == [[2], 1]",
    "context.r == context.r2",
    "context.r == {a: 1, b: \"x\"}",
    "{a: 1} == {a: 1, b: 2}",
    "decimal(\"1.50\") == principal.score",
    "ip(\"10.0.0.1\") == principal.ip",
    "ip(\"10.0.0.1/8\") == ip(\"10.0.0.0/8\")",
    "datetime(\"1990-01-01T13:00:00+0100\") == principal.born",
    "duration(\"90m\") == principal.wait",
    "principal.score == 1",
    // arithmetic and overflow
    "1 + 2 * 3 - 4 == 3",
    "context.big + 1 > 0",
    "context.big - 1 < context.big",
    "context.small - 1 < 0",
    "context.small * -1 > 0",
    "-context.small > 0",
    "-(context.n) == -5",
    "context.n * 2 <= 10",
    "-\"a\" == 1",
    "\"a\" + 1 == 1",
    // comparisons
    "1 < 2 && 2 <= 2 && 3 > 2 && 3 >= 3",
    "\"a\" < \"b\"",
    "principal.score < decimal(\"2.0\")",
    "principal.born < context.when",
    "context.d < principal.wait",
    "context.when >= principal.born",
    "principal.born < principal.wait",
    "1 < principal.wait",
    // attributes, has, missing data
    "principal.age == 30",
    "principal.missing == 1",
    "principal has missing",
    "principal has age",
    "principal.rec.y.z",
    "principal has rec.y.z",
    "principal has rec.y.w",
    "principal has rec.q.w",
    "principal has boss.age",
    "principal has ghost.age",
    "principal.ghost has age",
    "principal.ghost.age == 1",
    "principal.boss.age > 40",
    "context has n && context.n == 5",
    "context.missing == 1",
    "context.n has x",
    "context.n.x == 1",
    "principal.rec has x",
    "{a: 1}.a == 1",
    "{a: 1}.b == 1",
    "{a: 1} has b",
    "resource.owner == principal",
    "resource.owner.boss.age == 50",
    // hierarchy
    "principal in Group::\"g2\"",
    "principal in Group::\"g1\"",
    "principal in principal",
    "principal in [Group::\"g9\", Group::\"g2\"]",
    "principal in []",
    "principal in [Group::\"g2\", 1]",
    "principal in resource.readers",
    "principal in resource.mixed",
    "principal in 1",
    "1 in Group::\"g1\"",
    "User::\"nobody\" in User::\"nobody\"",
    "User::\"nobody\" in Group::\"g1\"",
    "action in Action::\"all\"",
    "action in [Action::\"all\", Action::\"other\"]",
    "resource in Doc::\"d1\"",
    // is
    "principal is User",
    "principal is Group",
    "principal is User in Group::\"g2\"",
    "principal is Group in Group::\"g2\"",
    "1 is User",
    "context.users.contains(principal) && principal is User",
    // tags
    "principal.hasTag(\"t1\")",
    "principal.hasTag(\"t9\")",
    "principal.getTag(\"t1\") == \"v1\"",
    "principal.getTag(\"t9\") == \"v1\"",
    "principal.getTag(\"t2\") + 1 == 8",
    "User::\"nobody\".hasTag(\"t1\")",
    "User::\"nobody\".getTag(\"t1\") == 1",
    "principal.hasTag(1)",
    "context.hasTag(\"x\")",
    // sets
    "context.set.contains(2)",
    "context.set.contains(\"2\")",
    "context.set.containsAll([1, 3])",
    "context.set.containsAll([1, 4])",
    "context.set.containsAny([4, 3])",
    "context.set.containsAny([])",
    "[].containsAll([])",
    "context.empty.isEmpty()",
    "context.set.isEmpty()",
    "context.n.isEmpty()",
    "context.n.contains(1)",
    "context.set.containsAll(1)",
    "principal.labels.contains(\"a\")",
    "[principal, resource].contains(User::\"alice\")",
    "[1, 1 + \"a\"].contains(1)",
    // like
    "context.s like \"hello*world\"",
    "context.s like \"hello\\*world\"",
    "context.s like \"hello\\*w*\"",
    "context.s like \"*\"",
    "context.s like \"h*o*w*d\"",
    "context.s like \"h*x\"",
    "\"\" like \"\"",
    "\"\" like \"*\"",
    "\"a*\" like \"a\\**\"",
    "\"\\u{1F600}x\" like \"?x\"",
    "\"\\u{1F600}x\" like \"*x\"",
    "1 like \"*\"",
    // decimal
    "decimal(\"1.2345\").lessThan(decimal(\"1.2346\"))",
    "decimal(\"-1.0\").lessThanOrEqual(decimal(\"-1\"))",
    "decimal(\"1.23456\") == decimal(\"1\")",
    "decimal(\"1.\") == decimal(\"1.0\")",
    "decimal(\"922337203685477.5807\").greaterThan(decimal(\"0.0\"))",
    "decimal(\"922337203685477.5808\").greaterThan(decimal(\"0.0\"))",
    "decimal(\"-922337203685477.5808\").greaterThanOrEqual(decimal(\"0.0\"))",
    "decimal(\"1.0\") < decimal(\"2.0\")",
    "principal.score.greaterThan(1)",
    "decimal(context.s) == decimal(\"1.0\")",
    "false && decimal(\"x\") == decimal(\"1.0\")",
    "true && decimal(\"x\") == decimal(\"1.0\")",
    // ipaddr
    "ip(\"127.0.0.1\").isLoopback()",
    "ip(\"127.0.0.1/4\").isLoopback()",
    "ip(\"::1\").isLoopback() && ip(\"::1\").isIpv6()",
    "ip(\"224.0.0.1\").isMulticast() && ip(\"224.0.0.1\").isIpv4()",
    "ip(\"ff00::/7\").isMulticast()",
    "principal.ip.isInRange(principal.net)",
    "principal.net.isInRange(ip(\"10.1.0.0/16\"))",
    "ip(\"10.1.2.3\").isInRange(ip(\"::/0\"))",
    "ip(\"::ffff:127.0.0.1\").isIpv6()",
    "ip(\"10.0.0.1/33\").isIpv4()",
    "ip(\"10.0.0.1/08\").isIpv4()",
    "ip(\"10.0.0.01\").isIpv4()",
    "ip(\"1:2:3:4:5:6:7:8/128\").isIpv6()",
    "ip(\"1.2.3.4\").isInRange(1)",
    "ip(\"1.2.3.4\").isInRange(ip(\"1.0.0.0/8\"), ip(\"2.0.0.0/8\"))",
    // datetime and duration
    "datetime(\"2024-02-29\") < datetime(\"2024-03-01\")",
    "datetime(\"2023-02-29\") < datetime(\"2024-03-01\")",
    "datetime(\"2024-01-01T00:00:00.001Z\").toTime() == duration(\"1ms\")",
    "datetime(\"1969-12-31T23:00:00Z\").toTime() == duration(\"23h\")",
    "datetime(\"1969-12-31T23:00:00Z\").toDate() == datetime(\"1969-12-31\")",
    "datetime(\"2024-01-01T10:00:00+2359\").toDate() == datetime(\"2023-12-31\")",
    "datetime(\"2024-01-01T10:00:00+2400\") == datetime(\"2024-01-01\")",
    "datetime(\"2024-01-01T10:00:00-0160\") == datetime(\"2024-01-01\")",
    "datetime(\"2024-01-01T24:00:00Z\") == datetime(\"2024-01-01\")",
    "datetime(\"2024-01-01T10:00:60Z\") == datetime(\"2024-01-01\")",
    "datetime(\"2024-01-01T10:00:00\") == datetime(\"2024-01-01\")",
    "datetime(\"2024-01-01T10:00:00.12Z\") == datetime(\"2024-01-01\")",
    "datetime(\"2024-1-01\") == datetime(\"2024-01-01\")",
    "datetime(\"0000-01-01\") < datetime(\"9999-12-31T23:59:59.999-2359\")",
    "context.when.offset(duration(\"1d\")) > context.when",
    "context.when.durationSince(principal.born) > duration(\"1d\")",
    "context.when.offset(duration(\"9223372036854775807ms\")) > context.when",
    "duration(\"2d3h4m5s6ms\").toMilliseconds() == 183845006",
    "duration(\"-2d3h\").toDays() == -2 && duration(\"-2d3h\").toHours() == -51",
    "duration(\"61s\").toMinutes() == 1 && duration(\"61s\").toSeconds() == 61",
    "duration(\"1m1h\") == duration(\"61m\")",
    "duration(\"\") == duration(\"0ms\")",
    "duration(\"-\") == duration(\"0ms\")",
    "duration(\"1ms1s\") == duration(\"1001ms\")",
    "duration(\"106751991167d\") > duration(\"1d\")",
    "duration(\"106751991168d\") > duration(\"1d\")",
    "duration(\"-9223372036854775808ms\") < duration(\"1ms\")",
    "duration(\"9223372036854775808ms\") < duration(\"1ms\")",
    "context.d.toMilliseconds() == -86400002",
    "principal.wait.toHours() == 1",
    "principal.born.toDate() == datetime(\"1990-01-01\")",
    "principal.born.offset(1) == principal.born",
    "datetime(context.s) == principal.born",
];

/// Policies with interesting scopes, besides `permit(principal, action, resource)`.
const SCOPED: &[&str] = &[
    "permit(principal == User::\"alice\", action == Action::\"read\", resource == Doc::\"d1\");",
    "permit(principal in Group::\"g2\", action in Action::\"all\", resource);",
    "permit(principal is User, action in [Action::\"read\", Action::\"write\"], resource is Doc);",
    "permit(principal is User in Group::\"g1\", action, resource in Doc::\"d1\");",
    "forbid(principal, action == Action::\"write\", resource) unless { principal has age };",
    "forbid(principal is Group, action, resource) when { principal.x == 1 };",
    "permit(principal, action, resource) when { true } unless { false } when { context.n == 5 };",
    "permit(principal, action, resource) unless { context.n };",
    "permit(principal, action, resource) when { false } when { 1 + \"a\" == 1 };",
    "permit(principal, action, resource) when { 1 + \"a\" == 1 } when { false };",
    "permit(principal == User::\"nobody\", action, resource) when { 1 + \"a\" == 1 };",
];

fn uid(s: &str) -> EntityUid {
    s.parse().expect("uid")
}

fn requests() -> Vec<Request> {
    let context = Context::from_json_str(CONTEXT, None).expect("context");
    [
        ("User::\"alice\"", "Action::\"read\"", "Doc::\"d1\""),
        ("User::\"bob\"", "Action::\"write\"", "Doc::\"d1\""),
        ("User::\"nobody\"", "Action::\"read\"", "Doc::\"nothing\""),
        ("Group::\"g1\"", "Action::\"all\"", "User::\"alice\""),
        ("Other::\"x\"", "Verb::\"read\"", "Other::\"y\""),
    ]
    .into_iter()
    .map(|(p, a, r)| Request::new(uid(p), uid(a), uid(r), context.clone(), None).expect("request"))
    .collect()
}

fn ids<'a>(it: impl Iterator<Item = &'a PolicyId>) -> BTreeSet<String> {
    it.map(ToString::to_string).collect()
}

/// Decides every request both ways and compares.
fn differential(set: &PolicySet, entities: &Entities) {
    let compiled = CompiledPolicies::compile(set).expect("compiles");
    assert!(
        compiled.fallbacks().is_empty(),
        "fallbacks: {:?}",
        compiled.fallbacks()
    );
    let store = Store::from_entities(&compiled, entities).expect("store");
    for request in requests() {
        let expected = Authorizer::new().is_authorized(&request, set, entities);
        let query = Query::from_request(&request, &store).expect("query");
        let got = compiled.is_authorized(&query).expect("decides");
        let expected_errors: BTreeSet<String> = expected
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => {
                    e.policy_id().to_string()
                }
            })
            .collect();
        let context = format!("{set}\nrequest {request}");
        assert_eq!(got.decision, expected.decision(), "decision of {context}");
        assert_eq!(
            ids(got.reason.iter()),
            ids(expected.diagnostics().reason()),
            "reason of {context}"
        );
        assert_eq!(
            ids(got.errors.iter()),
            expected_errors,
            "errors of {context}"
        );
    }
}

fn all_policies() -> Vec<String> {
    CONDITIONS
        .iter()
        .map(|c| format!("permit(principal, action, resource) when {{ {c} }};"))
        .chain(SCOPED.iter().map(|s| s.to_string()))
        .collect()
}

fn entities() -> Entities {
    Entities::from_json_str(ENTITIES, None).expect("entities")
}

#[test]
fn every_policy_alone_matches_cedar() {
    let entities = entities();
    for (i, text) in all_policies().iter().enumerate() {
        let Ok(policy) = Policy::parse(Some(PolicyId::new(format!("p{i}"))), text) else {
            // A condition Cedar's parser refuses is not a policy to compare.
            continue;
        };
        for effect_forbid in [false, true] {
            let policy = if effect_forbid {
                let forbid = text.replacen("permit(", "forbid(", 1);
                match Policy::parse(Some(PolicyId::new(format!("p{i}"))), &forbid) {
                    Ok(p) => p,
                    Err(_) => continue,
                }
            } else {
                policy.clone()
            };
            let mut set = PolicySet::new();
            set.add(policy).expect("add");
            differential(&set, &entities);
        }
    }
}

#[test]
fn the_whole_set_matches_cedar() {
    let mut set = PolicySet::new();
    for (i, text) in all_policies().iter().enumerate() {
        if let Ok(p) = Policy::parse(Some(PolicyId::new(format!("p{i}"))), text) {
            set.add(p).expect("add");
        }
    }
    assert_eq!(
        set.policies().count(),
        all_policies().len(),
        "every test policy parses"
    );
    differential(&set, &entities());
    // with a forbid that holds, the decision flips
    let mut with_forbid = set.clone();
    with_forbid
        .add(
            Policy::parse(
                Some(PolicyId::new("deny-alice")),
                "forbid(principal == User::\"alice\", action, resource);",
            )
            .expect("parse"),
        )
        .expect("add");
    differential(&with_forbid, &entities());
}

#[test]
fn upsert_keeps_ancestors_closed() {
    let set: PolicySet = "permit(principal in Group::\"top\", action, resource);"
        .parse()
        .expect("parse");
    let compiled = CompiledPolicies::compile(&set).expect("compile");
    let mut entities = entities();
    let mut store = Store::from_entities(&compiled, &entities).expect("store");
    // g2 gets a parent: alice (g1 -> g2 -> top) is now in top.
    let g2 = Entity::new_no_attrs(uid("Group::\"g2\""), [uid("Group::\"top\"")].into());
    store.upsert(&g2).expect("upsert");
    entities = entities.upsert_entities([g2], None).expect("cedar upsert");
    let check = |store: &Store, entities: &Entities| {
        for request in requests() {
            let expected = Authorizer::new().is_authorized(&request, &set, entities);
            let got = compiled
                .is_authorized(&Query::from_request(&request, store).expect("query"))
                .expect("decides");
            assert_eq!(got.decision, expected.decision(), "{request}");
        }
    };
    check(&store, &entities);
    // and loses it again
    let g2 = Entity::new_no_attrs(uid("Group::\"g2\""), Default::default());
    store.upsert(&g2).expect("upsert");
    entities = entities.upsert_entities([g2], None).expect("cedar upsert");
    check(&store, &entities);
    let first = requests().remove(0);
    let alice = Query::from_request(&first, &store).expect("q");
    assert_eq!(
        compiled.is_authorized(&alice).expect("decides").decision,
        Decision::Deny
    );
}

#[test]
fn templates_are_refused_and_foreign_stores_rejected() {
    let set: PolicySet = "permit(principal == ?principal, action, resource);"
        .parse()
        .expect("parse");
    assert!(CompiledPolicies::compile(&set).is_err());
    let a = CompiledPolicies::compile(&PolicySet::new()).expect("compile");
    let b = CompiledPolicies::compile(&PolicySet::new()).expect("compile");
    let store = Store::new(&a);
    let request = requests().remove(0);
    let q = Query::from_request(&request, &store).expect("query");
    assert!(b.is_authorized(&q).is_err());
    assert!(a.is_authorized(&q).is_ok());
}

/// Times the reference and the compiled path on every request of the conformance corpus
/// (decisions only: the files are loaded first). Run in release with
/// `MEMBERGATE_CORPUS=/path/to/unpacked cargo test --release --test lib corpus_timing -- --ignored --nocapture`.
#[test]
#[ignore = "needs the unpacked corpus; a measurement, not a check"]
fn corpus_timing() {
    use cedar_compiled::conformance::{discover, Test};
    use std::time::{Duration, Instant};
    let root = std::env::var("MEMBERGATE_CORPUS").unwrap_or_else(|_| "/tmp/corpus-c".into());
    let root = std::path::Path::new(&root);
    let files = discover(root).expect("corpus");
    let (mut reference, mut decide, mut build, mut query) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let mut requests = 0usize;
    let authorizer = Authorizer::new();
    for file in files {
        let Ok(test) = Test::load(root, &file) else {
            continue;
        };
        let reqs: Vec<Request> = test
            .spec
            .requests
            .iter()
            .filter_map(|r| test.request(r).ok())
            .collect();
        requests += reqs.len();
        let t = Instant::now();
        for r in &reqs {
            std::hint::black_box(authorizer.is_authorized(r, &test.policies, &test.entities));
        }
        reference += t.elapsed();
        let t = Instant::now();
        let compiled = CompiledPolicies::compile(&test.policies).expect("compile");
        let store = Store::from_entities(&compiled, &test.entities).expect("store");
        build += t.elapsed();
        let t = Instant::now();
        let queries: Vec<Query<'_>> = reqs
            .iter()
            .map(|r| Query::from_request(r, &store).expect("query"))
            .collect();
        query += t.elapsed();
        let t = Instant::now();
        for q in &queries {
            std::hint::black_box(compiled.is_authorized(q).expect("decides"));
        }
        decide += t.elapsed();
    }
    let per = |d: Duration| d.as_secs_f64() * 1e9 / requests.max(1) as f64;
    println!(
        "{requests} requests: reference {:.0} ns/request; compiled: decision {:.0} ns, \
         query from a Cedar request {:.0} ns, compile+store amortised {:.0} ns per request",
        per(reference),
        per(decide),
        per(query),
        per(build)
    );
}
