//! The sync: pull every location and reader from Stripe into the registry: the platform's,
//! and those of every merchant's connected account (merchant-owned, listed with
//! `Stripe-Account`).
//!
//! It costs three list calls per account (locations, readers, Terminal Configurations for
//! the locations' tipping; one read per page of 100), never a read per reader or location,
//! so it can run every few minutes within Stripe's read allocation. The Stripe reads finish
//! before the registry is touched. A record missing from Stripe's lists is marked `gone`
//! only if it was last written before the sync began, so a reader registered while the
//! lists were in flight is not mistaken for a deleted one, and only if its owner's account
//! was listed: an account Stripe refused to list (disconnected, say) loses nothing.

use super::tipping::{self, LocationTipping};
use super::{location_record, reader_record, Fleet, FleetError, LocationRecord, ReaderRecord};
use crate::clock::Timestamp;
use crate::store::Tree;
use crate::stripe::error::Disposition;
use crate::stripe::params::ListReaders;
use crate::stripe::wire::{Location, Reader};
use crate::stripe::RequestOptions;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What one sync changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SyncReport {
    pub locations: Counts,
    pub readers: Counts,
}

/// Added, changed and gone objects of one kind; `unchanged` were confirmed as they were.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Counts {
    pub added: usize,
    pub updated: usize,
    pub gone: usize,
    pub unchanged: usize,
}

/// What one account's lists returned: its owner (`None` = the platform), its locations
/// and readers, and its configurations' tipping.
type Listed = (Option<String>, Vec<Location>, Vec<Reader>, Configs);

/// Tipping by configuration id.
type Configs = HashMap<String, Option<LocationTipping>>;

pub(super) async fn run(fleet: &Arc<Fleet>) -> Result<SyncReport, FleetError> {
    let _one_at_a_time = fleet.sync_lock.lock().await;
    let started = Timestamp::now();
    let mut listed: Vec<Listed> = Vec::new();
    let platform = RequestOptions::platform();
    let (locations, readers, configs) = list_account(fleet, &platform).await?;
    listed.push((None, locations, readers, configs));
    // One listing per connected account, under the first merchant (by id) that names it.
    let mut merchants = fleet.merchants()?;
    merchants.sort_by(|a, b| a.id.cmp(&b.id));
    let mut accounts = HashSet::new();
    for m in merchants {
        if !accounts.insert(m.account.clone()) {
            continue;
        }
        match list_account(fleet, &RequestOptions::account(&m.account)).await {
            Ok((locations, readers, configs)) => {
                listed.push((Some(m.id), locations, readers, configs))
            }
            Err(FleetError::Stripe(e)) if e.disposition() == Disposition::Definitive => {
                // The account can no longer be read (disconnected, or a key without
                // access): its objects are kept as they are, not marked gone.
                tracing::warn!(merchant = %m.id, account = %m.account, error = %e, "merchant's account not synced");
            }
            Err(e) => return Err(e),
        }
    }
    let fleet = fleet.clone();
    tokio::task::spawn_blocking(move || apply(&fleet, started, &listed))
        .await
        .map_err(|e| FleetError::Store(crate::store::StoreError::Engine(e.to_string())))?
}

async fn list_account(
    fleet: &Fleet,
    o: &RequestOptions,
) -> Result<(Vec<Location>, Vec<Reader>, Configs), FleetError> {
    let locations = fleet.observed(fleet.stripe.list_locations_on(o)).await?;
    let readers = fleet
        .observed(fleet.stripe.list_readers_on(&ListReaders::default(), o))
        .await?;
    let configs = tipping::list_tipping(fleet, o).await?;
    Ok((locations, readers, configs))
}

/// The registry half of a sync: no network, under the fleet's write lock.
fn apply(fleet: &Fleet, started: Timestamp, listed: &[Listed]) -> Result<SyncReport, FleetError> {
    let owners: HashSet<Option<String>> = listed.iter().map(|(o, ..)| o.clone()).collect();
    let now = Timestamp::now();
    let mut report = SyncReport::default();
    let _w = fleet.writing();

    let known: HashMap<String, LocationRecord> = fleet
        .locations()?
        .into_iter()
        .map(|l| (l.id.clone(), l))
        .collect();
    let mut seen = HashSet::new();
    for (owner, locations, _, configs) in listed {
        for loc in locations {
            seen.insert(loc.id.clone());
            let existing = known.get(&loc.id);
            let (mut record, changed) = location_record(loc, existing, owner.clone(), now);
            let changed = tipping::synced(&mut record, configs, now) || changed;
            if changed {
                fleet.registry.put(Tree::Locations, &record.id, &record)?;
                if existing.is_some() {
                    report.locations.updated += 1;
                } else {
                    report.locations.added += 1;
                }
            } else {
                report.locations.unchanged += 1;
            }
        }
    }
    for (id, mut rec) in known {
        if !seen.contains(&id)
            && owners.contains(&rec.owner)
            && !rec.gone
            && rec.updated_at < started
        {
            rec.gone = true;
            rec.updated_at = now;
            fleet.registry.put(Tree::Locations, &id, &rec)?;
            report.locations.gone += 1;
        }
    }

    let known: HashMap<String, ReaderRecord> = fleet
        .readers()?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let mut seen = HashSet::new();
    for (owner, _, readers, _) in listed {
        for r in readers {
            seen.insert(r.id.clone());
            let existing = known.get(&r.id);
            let (record, changed) = reader_record(r, existing, owner.clone(), now);
            // Written even when unchanged: `synced_at` and the heartbeat say how fresh the
            // listed status is.
            fleet.registry.put(Tree::Readers, &record.id, &record)?;
            match (changed, existing.is_some()) {
                (true, true) => report.readers.updated += 1,
                (true, false) => report.readers.added += 1,
                (false, _) => report.readers.unchanged += 1,
            }
        }
    }
    for (id, mut rec) in known {
        if !seen.contains(&id)
            && owners.contains(&rec.owner)
            && !rec.gone
            && rec.updated_at < started
        {
            rec.gone = true;
            rec.status = "offline".to_string();
            rec.updated_at = now;
            fleet.registry.put(Tree::Readers, &id, &rec)?;
            report.readers.gone += 1;
        }
    }
    tracing::info!(
        locations_added = report.locations.added,
        locations_updated = report.locations.updated,
        locations_gone = report.locations.gone,
        readers_added = report.readers.added,
        readers_updated = report.readers.updated,
        readers_gone = report.readers.gone,
        "fleet synced with Stripe"
    );
    Ok(report)
}
