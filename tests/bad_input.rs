//! scratch
use membergate::*;
#[test]
fn scratch() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/tests/fixtures/party.toml")).unwrap();
    let party: Membership = toml::from_str(&text).unwrap();
    let engine = Engine::from_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")).unwrap();
    let p: PrincipalId = r#"Staff::"s-membership""#.parse().unwrap();
    for ts in [jiff::Timestamp::MIN, jiff::Timestamp::MAX, "-000001-01-01T00:00:00Z".parse().unwrap(), "0000-01-01T00:00:00Z".parse().unwrap(), "0001-01-01T00:00:00Z".parse().unwrap(), "9999-12-30T21:59:59Z".parse().unwrap(), "1969-12-31T23:59:59.9999Z".parse().unwrap()] {
        let t = ts;
        let mut party = party.clone();
        party.members.get_mut("m-eligible").unwrap().joined = ts;
        let r = engine.authorize(&party, &Request::new(p.clone(), Action::Read, "m-eligible", "phone", Context::at("2021-01-01T00:00:00Z".parse().unwrap())));
        println!("{t} -> {} -> {r:?}", ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"));
        let r = engine.authorize(&party, &Request::new(p.clone(), Action::Read, "m-00001", "phone", Context::at(ts)));
        println!("   now: {r:?}");
    }
    let t0 = std::time::Instant::now();
    let b = sample::bundled();
    println!("bundled {:?} {}", t0.elapsed(), b.members.len());
    let t0 = std::time::Instant::now();
    let page: Vec<&str> = b.members.keys().take(200).map(String::as_str).collect();
    let cs = PrincipalId::new(PrincipalKind::CampaignStaff, sample::ids::CS_A_STAFF);
    let ctx = Context::at("2020-03-01T12:00:00Z".parse().unwrap()).election(sample::ids::LEADER_2020);
    let s = engine.permitted_fields_page(&b, &cs, Action::Read, &page, &ctx).unwrap();
    println!("page {:?} {}", t0.elapsed(), s.len());
    let t0 = std::time::Instant::now();
    for m in &page[..20] { for (_, f) in engine.catalogue().iter() { engine.authorize(&b, &Request::new(cs.clone(), Action::Read, *m, &f.name, ctx.clone())).unwrap(); } }
    println!("authorize 20x19 {:?}", t0.elapsed());
    for s in ["Staff:\"x\"", "Nobody::\"x\"", "", "Staff::x"] { println!("{:?}", s.parse::<PrincipalId>().map_err(|e| e.to_string())); }
    println!("{:?}", "peek".parse::<Action>().map_err(|e| e.to_string()));
}
