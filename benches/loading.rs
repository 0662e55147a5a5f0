//! Loading a policy directory, as a start or a changed-directory reload does: reading,
//! parsing, strict validation against the schema, compiling and indexing
//! (`Engine::from_dir`).
//!
//! Group `load`: `policies_2000` and `policies_20000` (the most a directory may hold, see
//! `LoadError::LIMITS`), each the bundled policy directory with policies from
//! `sample::write_generated_policies` beside its own to make that many, 1,000 a file.
//! Loading is linear in the policies: the second takes 10 to 12 times the first.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use membergate::{sample, Engine, LoadError};
use tempfile::TempDir;

/// A copy of the bundled policy directory with generated policies added to make `total`.
fn directory_of(total: usize) -> TempDir {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for entry in std::fs::read_dir(&bundled).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if let (true, Some(name)) = (path.is_file(), path.file_name()) {
            std::fs::copy(&path, dir.path().join(name)).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let own = Engine::from_dir(&bundled)
        .unwrap_or_else(|e| panic!("{}", e.render()))
        .policy_ids()
        .count();
    sample::write_generated_policies(dir.path(), total.saturating_sub(own))
        .unwrap_or_else(|e| panic!("{e}"));
    dir
}

fn load(c: &mut Criterion) {
    let mut g = c.benchmark_group("load");
    // Seconds an iteration at 20,000 policies.
    g.sample_size(10);
    for total in [2_000, LoadError::LIMITS.2] {
        let dir = directory_of(total);
        let loaded = Engine::from_dir(dir.path()).unwrap_or_else(|e| panic!("{}", e.render()));
        assert_eq!(loaded.policy_ids().count(), total);
        drop(loaded);
        g.bench_function(format!("policies_{total}"), |b| {
            b.iter(|| Engine::from_dir(black_box(dir.path())).map(|e| e.policy_ids().count()))
        });
    }
    g.finish();
}

criterion_group!(benches, load);
criterion_main!(benches);
