//! `readerd migrate-store --from sled:PATH --to postgres:URL`: copies every record of one
//! store into another, empty one (moving a venue from one machine to a shared database).
//!
//! Refuses while a daemon holds the source (sled's lock: a running readerd keeps its
//! store open), and refuses a target that already holds records, so that nothing is ever
//! merged or overwritten. Checks the counts after the copy.

use crate::store::{Location, Registry, Store, Tree};
use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct MigrateArgs {
    /// The store to copy: sled:PATH (stop the daemon that uses it first).
    #[arg(long, value_name = "STORE")]
    pub from: String,
    /// The empty store to fill: postgres:URL.
    #[arg(long, value_name = "STORE")]
    pub to: String,
}

pub fn main(args: MigrateArgs) -> ExitCode {
    let (from, to) = match (Location::parse(&args.from), Location::parse(&args.to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) => {
            eprintln!("migrate-store: --from {e}");
            return ExitCode::from(crate::config::EX_CONFIG);
        }
        (_, Err(e)) => {
            eprintln!("migrate-store: --to {e}");
            return ExitCode::from(crate::config::EX_CONFIG);
        }
    };
    if from == to {
        eprintln!("migrate-store: --from and --to are the same store");
        return ExitCode::from(crate::config::EX_CONFIG);
    }
    match copy(&from, &to) {
        Ok(counts) => {
            for (tree, n) in counts {
                println!("{:<16} {n}", tree.name());
            }
            println!("copied {from:?} to {to:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("migrate-store: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open(location: &Location, role: &str) -> Result<Registry, String> {
    Registry::open_location(location).map_err(|e| {
        let e = e.to_string();
        if e.contains("could not acquire lock") {
            format!("the {role} store {location:?} is in use: stop the readerd that holds it first")
        } else {
            format!("cannot open the {role} store {location:?}: {e}")
        }
    })
}

/// Copies every tree; returns the number of records per tree.
pub fn copy(from: &Location, to: &Location) -> Result<Vec<(Tree, usize)>, String> {
    let source = open(from, "source")?;
    let target = open(to, "target")?;
    let (src, dst) = (source.store(), target.store());
    let e = |e: crate::store::StoreError| e.to_string();
    for tree in Tree::ALL.into_iter().filter(|t| *t != Tree::Meta) {
        let n = dst.scan(tree).map_err(e)?.len();
        if n > 0 {
            return Err(format!(
                "the target already holds {n} record(s) in {}: migrate into an empty store",
                tree.name()
            ));
        }
    }
    let mut counts = Vec::new();
    for tree in Tree::ALL {
        let rows = src.scan(tree).map_err(e)?;
        let mut n = 0;
        for (key, value) in &rows {
            // The schema version is the target's own, written when it was opened.
            if tree == Tree::Meta && key == "schema_version" {
                continue;
            }
            dst.put(tree, key, value).map_err(e)?;
            n += 1;
        }
        check(dst.as_ref(), tree, &rows)?;
        counts.push((tree, n));
    }
    Ok(counts)
}

/// Every source record is in the target, byte for byte.
fn check(dst: &dyn Store, tree: Tree, rows: &[(String, Vec<u8>)]) -> Result<(), String> {
    for (key, value) in rows {
        if tree == Tree::Meta && key == "schema_version" {
            continue;
        }
        if dst.get(tree, key).map_err(|e| e.to_string())?.as_ref() != Some(value) {
            return Err(format!("{}/{key} did not arrive intact", tree.name()));
        }
    }
    Ok(())
}
