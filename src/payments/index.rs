//! Secondary indexes of payments (tree `payment_index`), and the paged list they serve.
//!
//! Every payment write goes through [`write`], which puts the record and adds or removes its
//! index entries in one [`Batch`]: the store applies it atomically, so after a crash a record
//! appears in exactly its indexes. Keys (a time is the creation time in Unix milliseconds,
//! zero-padded to 16 digits so that text order is time order; merchant and reader ids are
//! escaped so that they hold no `/`):
//!
//! | key | value | serves |
//! | --- | --- | --- |
//! | `s/<status>/<time>/<id>` | empty | `?status=`; the open payments reconcile reads; the unfiltered list (every status merged); retention (the final statuses merged, oldest first); the report |
//! | `ms/<merchant>/<status>/<time>/<id>` | empty | `?merchant=` (the merchant's statuses merged), `?merchant=&status=`, a pos client's scope |
//! | `rs/<reader>/<status>/<time>/<id>` | empty | `?reader=` (the reader's statuses merged), `?reader=&status=` |
//! | `td/<time>/<id>` | empty | a payment that owes transfers (start-up, the sweep) |
//! | `i/<payment intent>` | payment id | webhook hints |
//! | `a/<id>` | `<time>/<id>` | an archived payment, so that a cursor naming it still pages |
//! | `rp/<refund key>` | empty | a pending refund (written by `refunds`), for reconcile |
//! | `rv/<refund key>` | empty | a refund whose transfer reversal is owed (written by `refunds`) |
//!
//! Every time-ordered entry sits under its status: a list that does not filter on status
//! merges the (seven) status ranges, newest first. Schema 3 also kept `t/<time>/<id>`,
//! `m/<merchant>/<time>/<id>` and `r/<reader>/<time>/<id>`: three more entries per payment
//! that the status-split ranges answer as well. sled keeps a few hundred bytes of
//! bookkeeping in memory for every node of its tree, and a leaf holds at most 16 keys, so
//! the daemon's memory follows the number of keys in the store: four entries per payment
//! instead of six is a quarter fewer nodes (docs/BENCHMARKS.md).
//!
//! A page reads its index ranges from the cursor on and loads only the payments it answers
//! (plus those a second filter skips), so it costs O(page), not O(history).
//!
//! Longer than 600 lines on purpose: one key layout for every index entry of a payment,
//! with everything that writes, pages, rebuilds and verifies it, so that writers and
//! readers cannot disagree about a key.

use super::machine::{Payment, Status};
use crate::clock::Timestamp;
use crate::store::{Batch, Registry, StoreError, Tree};
use std::collections::{BTreeSet, VecDeque};

/// The index tree.
const TREE: Tree = Tree::PaymentIndex;

/// Escapes `%` and `/` so that an id is one key segment.
fn part(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

/// A creation time as a key segment.
fn time(t: Timestamp) -> String {
    format!("{:016}", t.as_ms().max(0))
}

/// Where a payment sorts in every time-ordered index: `<time>/<id>`.
fn position(p: &Payment) -> String {
    format!("{}/{}", time(p.created_at), p.id)
}

/// The statuses that are not final, whose payments reconcile and the sweep read.
pub const OPEN: [Status; 5] = [
    Status::Queued,
    Status::Processing,
    Status::RequiresConfirmation,
    Status::RequiresCapture,
    Status::Declined,
];

/// The index entries of a payment, with their values.
pub(crate) fn entries(p: &Payment) -> Vec<(String, Vec<u8>)> {
    let pos = position(p);
    let st = p.status.as_str();
    let mut out = vec![
        (format!("s/{st}/{pos}"), Vec::new()),
        (format!("rs/{}/{st}/{pos}", part(&p.reader)), Vec::new()),
    ];
    if super::engine::Engine::transfers_due(p) {
        out.push((format!("td/{pos}"), Vec::new()));
    }
    // A basket is listed under each of its merchants.
    let mut merchants = p.merchants();
    merchants.sort_unstable();
    merchants.dedup();
    for m in merchants {
        out.push((format!("ms/{}/{st}/{pos}", part(m)), Vec::new()));
    }
    if let Some(pi) = &p.payment_intent {
        out.push((format!("i/{}", part(pi)), p.id.clone().into_bytes()));
    }
    out
}

/// The prefixes of index entries that schema 3 wrote and schema 4 no longer does.
const SCHEMA_3_ONLY: [&str; 3] = ["t/", "m/", "r/"];

/// Adds to `batch` the record `new` and the index changes from `old` (the stored record,
/// `None` for a new payment) to `new`.
pub(crate) fn stage(batch: &mut Batch, old: Option<&Payment>, new: &Payment) {
    batch.put_record(Tree::Payments, new.id.clone(), new);
    let before: BTreeSet<String> = old
        .map(|o| entries(o).into_iter().map(|(k, _)| k).collect())
        .unwrap_or_default();
    let after = entries(new);
    let keep: BTreeSet<&String> = after.iter().map(|(k, _)| k).collect();
    for k in &before {
        if !keep.contains(k) {
            batch.remove(TREE, k.clone());
        }
    }
    for (k, v) in after {
        // The intent entry is rewritten when present: cheap, and it heals nothing but is
        // always right.
        if !before.contains(&k) || k.starts_with("i/") {
            batch.put(TREE, k, v);
        }
    }
}

/// Writes a payment and its index entries atomically. The caller holds the payment's write
/// lock, and `old` is what the store holds now.
pub(crate) fn write(
    registry: &Registry,
    old: Option<&Payment>,
    new: &Payment,
) -> Result<(), StoreError> {
    let mut batch = Batch::default();
    stage(&mut batch, old, new);
    registry.apply(batch)
}

/// Adds to `batch` the removal of an archived payment and its index entries, and the
/// tombstone that keeps a cursor naming it usable.
pub(crate) fn stage_archive(batch: &mut Batch, p: &Payment) {
    batch.remove(Tree::Payments, p.id.clone());
    for (k, _) in entries(p) {
        batch.remove(TREE, k);
    }
    batch.put(TREE, format!("a/{}", p.id), position(p).into_bytes());
}

/// Builds every payment's index entries (the step of the store's schema 2 → 4).
/// Idempotent: a step interrupted by a crash is simply run again. Reads the payments a
/// chunk at a time.
pub fn rebuild(registry: &Registry) -> Result<usize, StoreError> {
    let n = put_entries(registry)?;
    super::refunds::rebuild(registry)?;
    Ok(n)
}

/// The step of the store's schema 3 → 4: removes the entries only schema 3 wrote (by
/// time, merchant, reader), adds each payment's reader+status entry and marks the refunds
/// whose reversal is owed. Idempotent, like [`rebuild`], and a chunk at a time; a step
/// interrupted by a crash (or a service manager's start timeout: minutes at a million
/// payments) resumes where it stopped, through a progress mark written with each chunk.
pub fn migrate_from_3(registry: &Registry) -> Result<usize, StoreError> {
    const CHUNK: usize = 1000;
    for prefix in SCHEMA_3_ONLY {
        loop {
            let rows = registry
                .store()
                .scan_range(TREE, prefix, None, CHUNK, false)?;
            if rows.is_empty() {
                break;
            }
            let mut batch = Batch::default();
            for (k, _) in rows {
                batch.remove(TREE, k);
            }
            registry.apply(batch)?;
        }
    }
    let resume = registry
        .store()
        .get(Tree::Meta, MIGRATION_4_MARK)?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let mut n = 0;
    let mut batch = Batch::default();
    registry.for_each_after::<Payment>(Tree::Payments, "", resume, CHUNK, |id, p| {
        for (k, v) in entries(&p) {
            if k.starts_with("rs/") {
                batch.put(TREE, k, v);
            }
        }
        n += 1;
        if n % CHUNK == 0 {
            batch.put(Tree::Meta, MIGRATION_4_MARK, id.into_bytes());
            registry.apply(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    registry.apply(batch)?;
    super::refunds::rebuild(registry)?;
    registry.store().remove(Tree::Meta, MIGRATION_4_MARK)?;
    Ok(n)
}

/// The meta key holding the last payment whose entries the step 3 → 4 has written.
const MIGRATION_4_MARK: &str = "migration_4_through";

/// Puts every payment's index entries, a chunk at a time.
fn put_entries(registry: &Registry) -> Result<usize, StoreError> {
    const CHUNK: usize = 1000;
    let mut n = 0;
    let mut batch = Batch::default();
    registry.for_each::<Payment>(Tree::Payments, "", CHUNK, |_, p| {
        for (k, v) in entries(&p) {
            batch.put(TREE, k, v);
        }
        n += 1;
        if n % CHUNK == 0 {
            registry.apply(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    registry.apply(batch)?;
    Ok(n)
}

/// The payment of a PaymentIntent, if it is one of ours.
pub(crate) fn by_intent(registry: &Registry, pi: &str) -> Result<Option<String>, StoreError> {
    Ok(registry
        .store()
        .get(TREE, &format!("i/{}", part(pi)))?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// The id at the end of an index key (`…/<time>/<id>`).
fn id_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Calls `f` with the id of every payment that is not final, oldest first within each
/// status, reading the status index a chunk at a time (never the payments tree).
pub(crate) fn for_each_open(
    registry: &Registry,
    f: impl FnMut(String) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let prefixes: Vec<String> = OPEN
        .iter()
        .map(|st| format!("s/{}/", st.as_str()))
        .collect();
    for_each_under(registry, &prefixes, f)
}

/// Calls `f` with the id of every payment in `status`, oldest first, reading the status
/// index a chunk at a time.
pub(crate) fn for_each_in_status(
    registry: &Registry,
    status: Status,
    f: impl FnMut(String) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for_each_under(registry, &[format!("s/{}/", status.as_str())], f)
}

/// Calls `f` with the id of every payment that owes transfers, oldest first.
pub(crate) fn for_each_transfers_due(
    registry: &Registry,
    f: impl FnMut(String) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for_each_under(registry, &["td/".to_string()], f)
}

/// Calls `f` with the id at the end of every index key under each prefix, in order.
fn for_each_under(
    registry: &Registry,
    prefixes: &[String],
    mut f: impl FnMut(String) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for prefix in prefixes {
        let mut after: Option<String> = None;
        loop {
            let rows = registry
                .store()
                .scan_range(TREE, prefix, after.as_deref(), 500, false)?;
            let done = rows.len() < 500;
            for (k, _) in rows {
                f(id_of(&k).to_string())?;
                after = Some(k);
            }
            if done {
                break;
            }
        }
    }
    Ok(())
}

/// Calls `f` with every final payment created before `before`, oldest first, until `f`
/// answers `false`: the final statuses' ranges merged, read `chunk` entries at a time.
pub(crate) fn for_each_final_created_before(
    registry: &Registry,
    before: Timestamp,
    chunk: usize,
    mut f: impl FnMut(Payment) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let bound = time(before);
    let prefixes = Status::ALL
        .into_iter()
        .filter(|s| s.is_final())
        .map(|s| format!("s/{}/", s.as_str()))
        .collect();
    let mut merged = Merged::new(prefixes, None, false, chunk.max(1));
    while let Some(pos) = merged.next(registry)? {
        if pos >= bound {
            return Ok(());
        }
        if let Some(p) = registry.get::<Payment>(Tree::Payments, id_of(&pos))? {
            if !f(p)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The payments in `status` created in `[from, to)`, oldest first, read through the status
/// index a chunk at a time (a period's report reads its period only).
pub(crate) fn created_in(
    registry: &Registry,
    status: Status,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Payment>, StoreError> {
    let prefix = format!("s/{}/", status.as_str());
    let end = format!("{prefix}{}", time(to));
    let mut after = Some(format!("{prefix}{}", time(from)));
    let mut out = Vec::new();
    loop {
        let rows = registry
            .store()
            .scan_range(TREE, &prefix, after.as_deref(), 1000, false)?;
        let done = rows.len() < 1000;
        for (k, _) in rows {
            if k >= end {
                return Ok(out);
            }
            if let Some(p) = registry.get::<Payment>(Tree::Payments, id_of(&k))? {
                out.push(p);
            }
            after = Some(k);
        }
        if done {
            return Ok(out);
        }
    }
}

/// A page of the payment list.
#[derive(Clone, Debug, Default)]
pub struct PageQuery {
    pub merchant: Option<String>,
    pub reader: Option<String>,
    pub status: Option<Status>,
    /// Only these merchants (a pos client's scope); `None` = all.
    pub scope: Option<Vec<String>>,
    pub created_gte: Option<Timestamp>,
    pub created_lt: Option<Timestamp>,
    /// The last payment of the previous page.
    pub starting_after: Option<String>,
    pub limit: usize,
}

/// The answer: at most `limit` payments, newest first, and whether more follow.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub items: Vec<Payment>,
    pub has_more: bool,
}

/// Why a page cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// `starting_after` names no payment, live or archived.
    #[error("no such payment {0} to start after")]
    UnknownCursor(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One index range, read a chunk at a time in one direction.
struct Source {
    prefix: String,
    /// The last key read (or the bound to read past).
    after: Option<String>,
    buf: VecDeque<String>,
    done: bool,
    /// The next chunk's size: it doubles up to `max_chunk`, so that a range that holds
    /// few of a page's entries (a rare status among merged ones) costs little.
    chunk: usize,
    max_chunk: usize,
}

impl Source {
    /// Reads the keys under `prefix` strictly past `from` (a position), when given.
    fn new(prefix: String, from: Option<&str>, first: usize, max_chunk: usize) -> Source {
        let after = from.map(|b| format!("{prefix}{b}"));
        Source {
            prefix,
            after,
            buf: VecDeque::new(),
            done: false,
            chunk: first,
            max_chunk,
        }
    }

    /// The position (`<time>/<id>`) of the next entry, reading a chunk if needed.
    fn head(&mut self, registry: &Registry, reverse: bool) -> Result<Option<&str>, StoreError> {
        if self.buf.is_empty() && !self.done {
            let rows = registry.store().scan_range(
                TREE,
                &self.prefix,
                self.after.as_deref(),
                self.chunk,
                reverse,
            )?;
            self.done = rows.len() < self.chunk;
            self.chunk = (self.chunk * 2).min(self.max_chunk);
            if let Some((k, _)) = rows.last() {
                self.after = Some(k.clone());
            }
            self.buf.extend(
                rows.into_iter()
                    .map(|(k, _)| k[self.prefix.len()..].to_string()),
            );
        }
        Ok(self.buf.front().map(String::as_str))
    }
}

/// Several index ranges merged into one sequence of positions, newest first (`reverse`)
/// or oldest first; a position found in several ranges (a basket of several merchants)
/// comes once.
struct Merged {
    sources: Vec<Source>,
    reverse: bool,
    last: Option<String>,
}

impl Merged {
    /// Each range reads at most `max_chunk` entries at a time, and its share of them at
    /// first.
    fn new(prefixes: Vec<String>, from: Option<&str>, reverse: bool, max_chunk: usize) -> Merged {
        let max_chunk = max_chunk.max(1);
        let first = (max_chunk / prefixes.len().max(1)).clamp(16.min(max_chunk), max_chunk);
        Merged {
            sources: prefixes
                .into_iter()
                .map(|p| Source::new(p, from, first, max_chunk))
                .collect(),
            reverse,
            last: None,
        }
    }

    fn next(&mut self, registry: &Registry) -> Result<Option<String>, StoreError> {
        loop {
            let mut best: Option<(usize, String)> = None;
            for (i, s) in self.sources.iter_mut().enumerate() {
                if let Some(h) = s.head(registry, self.reverse)? {
                    let better = best
                        .as_ref()
                        .is_none_or(|(_, b)| h != b.as_str() && (h > b.as_str()) == self.reverse);
                    if better {
                        best = Some((i, h.to_string()));
                    }
                }
            }
            let Some((i, _)) = best else {
                return Ok(None);
            };
            let pos = self.sources[i].buf.pop_front().expect("a head");
            if self.last.as_deref() != Some(pos.as_str()) {
                self.last = Some(pos.clone());
                return Ok(Some(pos));
            }
        }
    }
}

/// A page of payments, newest first (by creation time, then id), that pass every filter.
pub fn page(registry: &Registry, q: &PageQuery) -> Result<Page, PageError> {
    let limit = q.limit.max(1);
    let allowed = |m: &str| q.scope.as_ref().is_none_or(|s| s.iter().any(|x| x == m));
    // A payment is the caller's when every merchant it is for is (a basket's too).
    let visible = |p: &Payment| p.merchants().iter().all(|m| allowed(m));
    // The statuses to merge: the one asked for, or all of them.
    let statuses: Vec<&str> = match q.status {
        Some(s) => vec![s.as_str()],
        None => Status::ALL.iter().map(|s| s.as_str()).collect(),
    };
    let under =
        |head: &str| -> Vec<String> { statuses.iter().map(|st| format!("{head}{st}/")).collect() };
    // The index ranges to merge: the narrowest the filters allow.
    let prefixes: Vec<String> = if let Some(r) = &q.reader {
        under(&format!("rs/{}/", part(r)))
    } else if let Some(m) = &q.merchant {
        if !allowed(m) {
            return Ok(Page::default());
        }
        under(&format!("ms/{}/", part(m)))
    } else if let Some(scope) = &q.scope {
        let mut ms: Vec<&String> = scope.iter().collect();
        ms.sort();
        ms.dedup();
        ms.into_iter()
            .flat_map(|m| under(&format!("ms/{}/", part(m))))
            .collect()
    } else {
        under("s/")
    };
    let mut below: Vec<String> = Vec::new();
    if let Some(lt) = q.created_lt {
        below.push(time(lt));
    }
    if let Some(id) = &q.starting_after {
        let pos = match registry.get::<Payment>(Tree::Payments, id)? {
            Some(p) => position(&p),
            None => match registry.store().get(TREE, &format!("a/{id}"))? {
                Some(b) => String::from_utf8_lossy(&b).into_owned(),
                None => return Err(PageError::UnknownCursor(id.clone())),
            },
        };
        below.push(pos);
    }
    let floor = q.created_gte.map(time);
    // Start strictly below the smallest of the bounds (cursor, `created_lt`).
    let from = below.into_iter().min();
    let mut merged = Merged::new(prefixes, from.as_deref(), true, (limit + 1).min(1001));
    let mut items = Vec::new();
    while let Some(pos) = merged.next(registry)? {
        if floor.as_ref().is_some_and(|f| pos.as_str() < f.as_str()) {
            // Every other position is older still.
            break;
        }
        let Some(p) = registry.get::<Payment>(Tree::Payments, id_of(&pos))? else {
            continue;
        };
        let pass = q
            .merchant
            .as_ref()
            .is_none_or(|m| p.merchants().contains(&m.as_str()))
            && q.reader.as_ref().is_none_or(|r| &p.reader == r)
            && q.status.is_none_or(|s| p.status == s)
            && visible(&p);
        if !pass {
            continue;
        }
        if items.len() == limit {
            return Ok(Page {
                items,
                has_more: true,
            });
        }
        items.push(p);
    }
    Ok(Page {
        items,
        has_more: false,
    })
}

/// Every disagreement between the payments and their indexes: a payment missing one of its
/// entries, or an entry (other than a tombstone) that its payment does not have. Empty when
/// the store is consistent. Reads everything, a chunk at a time: for tests and checks.
pub fn verify(registry: &Registry) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    registry.for_each::<Payment>(Tree::Payments, "", 1000, |id, p| {
        for (k, v) in entries(&p) {
            match registry.store().get(TREE, &k)? {
                Some(got) if got == v => {}
                _ => problems.push(format!("{id}: index entry {k} missing")),
            }
        }
        Ok(())
    })?;
    let mut after: Option<String> = None;
    loop {
        let rows = registry
            .store()
            .scan_range(TREE, "", after.as_deref(), 1000, false)?;
        let done = rows.len() < 1000;
        for (k, v) in rows {
            let id = if k.starts_with("i/") {
                String::from_utf8_lossy(&v).into_owned()
            } else {
                id_of(&k).to_string()
            };
            // Tombstones, and the refunds' marks (checked by `refunds::verify`).
            if !k.starts_with("a/") && !k.starts_with("rp/") && !k.starts_with("rv/") {
                let ok = registry
                    .get::<Payment>(Tree::Payments, &id)?
                    .is_some_and(|p| entries(&p).iter().any(|(e, _)| e == &k));
                if !ok {
                    problems.push(format!("index entry {k} names no such record"));
                }
            }
            after = Some(k);
        }
        if done {
            problems.extend(super::refunds::verify(registry)?);
            return Ok(problems);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payments::machine::{CaptureMode, ChargeType, NewPayment};

    fn pay(id: &str, merchant: &str, reader: &str, at: i64) -> Payment {
        Payment::new(
            NewPayment {
                id: id.into(),
                merchant: merchant.into(),
                account: "acct_1".into(),
                charge_type: ChargeType::Direct,
                reader: reader.into(),
                amount: 100,
                currency: "eur".into(),
                capture: CaptureMode::Automatic,
                description: None,
                metadata: Default::default(),
                application_fee_amount: None,
                on_behalf_of: None,
                intent_key: format!("k:{id}"),
                skip_tipping: false,
            },
            Timestamp::from_ms(at),
        )
    }

    fn ids(p: &Page) -> Vec<&str> {
        p.items.iter().map(|p| p.id.as_str()).collect()
    }

    fn q(limit: usize) -> PageQuery {
        PageQuery {
            limit,
            ..Default::default()
        }
    }

    /// Five payments, `pay_1` (oldest) to `pay_5`, alternating merchants a and b.
    fn five() -> Registry {
        let r = Registry::temporary().unwrap();
        for i in 1..=5 {
            let m = if i % 2 == 1 { "a" } else { "b" };
            write(&r, None, &pay(&format!("pay_{i}"), m, "tmr/1", 1000 * i)).unwrap();
        }
        r
    }

    #[test]
    fn an_empty_store_answers_an_empty_last_page() {
        let r = Registry::temporary().unwrap();
        let p = page(&r, &q(10)).unwrap();
        assert!(p.items.is_empty());
        assert!(!p.has_more);
    }

    #[test]
    fn pages_follow_each_other_newest_first_and_the_exact_last_page_says_no_more() {
        let r = five();
        let p1 = page(&r, &q(2)).unwrap();
        assert_eq!(ids(&p1), ["pay_5", "pay_4"]);
        assert!(p1.has_more);
        let mut next = q(2);
        next.starting_after = Some("pay_4".into());
        let p2 = page(&r, &next).unwrap();
        assert_eq!(ids(&p2), ["pay_3", "pay_2"]);
        next.starting_after = Some("pay_2".into());
        let p3 = page(&r, &next).unwrap();
        assert_eq!(ids(&p3), ["pay_1"]);
        assert!(!p3.has_more);
        // Exactly `limit` left: no more after them.
        let mut exact = q(5);
        assert!(!page(&r, &exact).unwrap().has_more);
        exact.limit = 4;
        assert!(page(&r, &exact).unwrap().has_more);
        // A cursor that names nothing is refused, not read as "from the start".
        next.starting_after = Some("pay_nope".into());
        assert!(matches!(page(&r, &next), Err(PageError::UnknownCursor(_))));
    }

    #[test]
    fn a_payment_created_while_paging_causes_no_duplicate_and_no_gap() {
        let r = five();
        let p1 = page(&r, &q(2)).unwrap();
        write(&r, None, &pay("pay_6", "a", "tmr/1", 6000)).unwrap();
        let mut seen: Vec<String> = ids(&p1).iter().map(|s| s.to_string()).collect();
        let mut next = q(2);
        next.starting_after = p1.items.last().map(|p| p.id.clone());
        loop {
            let p = page(&r, &next).unwrap();
            seen.extend(p.items.iter().map(|p| p.id.clone()));
            if !p.has_more {
                break;
            }
            next.starting_after = p.items.last().map(|p| p.id.clone());
        }
        assert_eq!(seen, ["pay_5", "pay_4", "pay_3", "pay_2", "pay_1"]);
    }

    #[test]
    fn an_archived_cursor_still_pages() {
        let r = five();
        let p4 = r.get::<Payment>(Tree::Payments, "pay_4").unwrap().unwrap();
        let mut b = Batch::default();
        stage_archive(&mut b, &p4);
        r.apply(b).unwrap();
        let mut next = q(10);
        next.starting_after = Some("pay_4".into());
        assert_eq!(ids(&page(&r, &next).unwrap()), ["pay_3", "pay_2", "pay_1"]);
        assert!(verify(&r).unwrap().is_empty());
    }

    #[test]
    fn filters_read_their_own_index_and_status_changes_move_entries() {
        let r = five();
        let mut f = q(10);
        f.merchant = Some("b".into());
        assert_eq!(ids(&page(&r, &f).unwrap()), ["pay_4", "pay_2"]);
        f.merchant = None;
        f.scope = Some(vec!["a".into()]);
        assert_eq!(ids(&page(&r, &f).unwrap()), ["pay_5", "pay_3", "pay_1"]);
        f.scope = Some(vec!["a".into(), "b".into()]);
        f.limit = 3;
        assert_eq!(ids(&page(&r, &f).unwrap()), ["pay_5", "pay_4", "pay_3"]);
        // A reader id with a `/` is one key segment.
        let mut byr = q(10);
        byr.reader = Some("tmr/1".into());
        assert_eq!(page(&r, &byr).unwrap().items.len(), 5);
        byr.reader = Some("tmr".into());
        assert!(page(&r, &byr).unwrap().items.is_empty());
        // Time bounds: gte included, lt excluded.
        let mut t = q(10);
        t.created_gte = Some(Timestamp::from_ms(2000));
        t.created_lt = Some(Timestamp::from_ms(4000));
        assert_eq!(ids(&page(&r, &t).unwrap()), ["pay_3", "pay_2"]);
        // A status change moves the payment between status entries, in the same batch.
        let old = r.get::<Payment>(Tree::Payments, "pay_3").unwrap().unwrap();
        let mut new = old.clone();
        new.status = Status::Succeeded;
        new.payment_intent = Some("pi_3".into());
        write(&r, Some(&old), &new).unwrap();
        let mut s = q(10);
        s.status = Some(Status::Succeeded);
        assert_eq!(ids(&page(&r, &s).unwrap()), ["pay_3"]);
        s.merchant = Some("a".into());
        assert_eq!(ids(&page(&r, &s).unwrap()), ["pay_3"]);
        s.merchant = Some("b".into());
        assert!(page(&r, &s).unwrap().items.is_empty());
        s.status = Some(Status::Queued);
        s.merchant = None;
        assert_eq!(
            ids(&page(&r, &s).unwrap()),
            ["pay_5", "pay_4", "pay_2", "pay_1"]
        );
        assert_eq!(by_intent(&r, "pi_3").unwrap().as_deref(), Some("pay_3"));
        let mut open = Vec::new();
        for_each_open(&r, |id| {
            open.push(id);
            Ok(())
        })
        .unwrap();
        assert_eq!(open, ["pay_1", "pay_2", "pay_4", "pay_5"]);
        assert!(verify(&r).unwrap().is_empty());
    }

    #[test]
    fn a_store_of_the_previous_schema_gets_its_indexes_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What readerd of schema 2 wrote: the records alone (each missing its
            // entries by status, by merchant and status, by reader and status).
            let r = Registry::open(dir.path()).unwrap();
            for i in 1..=2500 {
                r.put(
                    Tree::Payments,
                    &format!("pay_{i:05}"),
                    &pay(&format!("pay_{i:05}"), "a", "tmr_1", i),
                )
                .unwrap();
            }
            r.store().put(Tree::Meta, "schema_version", b"2").unwrap();
            assert_eq!(verify(&r).unwrap().len(), 2500 * 3);
        }
        let r = Registry::open(dir.path()).unwrap();
        assert!(verify(&r).unwrap().is_empty());
        assert_eq!(
            r.store()
                .get(Tree::Meta, "schema_version")
                .unwrap()
                .unwrap(),
            b"4"
        );
        let p = page(&r, &q(3)).unwrap();
        assert_eq!(ids(&p), ["pay_02500", "pay_02499", "pay_02498"]);
    }

    /// The entries readerd of schema 3 wrote for a payment.
    fn schema_3_entries(p: &Payment) -> Vec<(String, Vec<u8>)> {
        let pos = position(p);
        let st = p.status.as_str();
        let m = part(&p.merchant);
        let mut out = vec![
            (format!("t/{pos}"), Vec::new()),
            (format!("r/{}/{pos}", part(&p.reader)), Vec::new()),
            (format!("s/{st}/{pos}"), Vec::new()),
            (format!("m/{m}/{pos}"), Vec::new()),
            (format!("ms/{m}/{st}/{pos}"), Vec::new()),
        ];
        if let Some(pi) = &p.payment_intent {
            out.push((format!("i/{}", part(pi)), p.id.clone().into_bytes()));
        }
        out
    }

    #[test]
    fn a_store_of_schema_3_is_split_by_status_at_open_and_its_owed_reversals_marked() {
        use crate::payments::refunds::{self, RefundRecord, RefundStatus};
        let dir = tempfile::tempdir().unwrap();
        let refund = |n: u32, status: RefundStatus, reversal_amount: i64| RefundRecord {
            id: format!("rf_{n}"),
            payment: "pay_00001".into(),
            amount: 100,
            stripe_key: format!("k{n}"),
            status,
            refund: Some(format!("re_{n}")),
            created_at: Timestamp::from_ms(1),
            reverse_transfer: false,
            split: None,
            merchant: None,
            reversal_amount,
            reversal_key: None,
            reversal: None,
            reversal_error: None,
            on_reader: None,
        };
        {
            // What readerd of schema 3 wrote: records, their six kinds of entries, the
            // pending marks of refunds, no reversal marks.
            let r = Registry::open(dir.path()).unwrap();
            let mut b = Batch::default();
            for i in 1..=2100 {
                let id = format!("pay_{i:05}");
                let mut p = pay(
                    &id,
                    ["a", "b"][i % 2],
                    ["tmr/1", "tmr_2"][i % 3 % 2],
                    i as i64,
                );
                p.status = [Status::Succeeded, Status::Canceled, Status::Queued][i % 3];
                p.payment_intent = Some(format!("pi_{i}"));
                b.put_record(Tree::Payments, id.clone(), &p);
                for (k, v) in schema_3_entries(&p) {
                    b.put(TREE, k, v);
                }
            }
            b.put(TREE, "a/pay_00000", b"0000000000000000/pay_00000".to_vec());
            let owed = refund(1, RefundStatus::Succeeded, 40);
            let pending = refund(2, RefundStatus::Pending, 0);
            let done = refund(3, RefundStatus::Succeeded, 0);
            for rec in [&owed, &pending, &done] {
                b.put_record(Tree::Refunds, refunds::key(&rec.payment, &rec.id), rec);
            }
            b.put(TREE, "rp/pay_00001/rf_2", Vec::new());
            r.apply(b).unwrap();
            r.store().put(Tree::Meta, "schema_version", b"3").unwrap();
            assert!(!verify(&r).unwrap().is_empty());
            assert!(
                refunds::reversals_due(&r).unwrap().is_empty(),
                "not marked yet"
            );
        }
        let r = Registry::open(dir.path()).unwrap();
        assert!(verify(&r).unwrap().is_empty(), "{:?}", verify(&r).unwrap());
        assert_eq!(
            r.store()
                .get(Tree::Meta, "schema_version")
                .unwrap()
                .unwrap(),
            b"4"
        );
        for gone in SCHEMA_3_ONLY {
            assert!(r
                .store()
                .scan_range(TREE, gone, None, 1, false)
                .unwrap()
                .is_empty());
        }
        let due: Vec<String> = refunds::reversals_due(&r)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(due, ["rf_1"]);
        assert_eq!(refunds::pending(&r).unwrap().len(), 1);
        // Every list still answers, newest first, through the split entries.
        assert_eq!(ids(&page(&r, &q(2)).unwrap()), ["pay_02100", "pay_02099"]);
        let mut byr = q(3);
        byr.reader = Some("tmr/1".into());
        byr.status = Some(Status::Succeeded);
        // i % 3 == 0 is succeeded, and then i % 3 % 2 == 0 is reader tmr/1.
        assert_eq!(
            ids(&page(&r, &byr).unwrap()),
            ["pay_02100", "pay_02097", "pay_02094"]
        );
        let mut bym = q(2);
        bym.merchant = Some("b".into());
        assert_eq!(ids(&page(&r, &bym).unwrap()), ["pay_02099", "pay_02097"]);
        // The archived cursor still pages.
        let mut old = q(5);
        old.starting_after = Some("pay_00000".into());
        assert!(page(&r, &old).unwrap().items.is_empty());
        // Reopening migrates nothing twice.
        drop(r);
        let r = Registry::open(dir.path()).unwrap();
        assert!(verify(&r).unwrap().is_empty());
    }

    #[test]
    fn a_readers_status_page_reads_its_own_range_and_follows_status_changes() {
        let r = Registry::temporary().unwrap();
        for i in 1..=40 {
            let mut p = pay(
                &format!("pay_{i:02}"),
                "a",
                ["tmr_2", "tmr_1"][i % 2],
                i as i64,
            );
            p.status = if i % 4 == 0 {
                Status::Canceled
            } else {
                Status::Succeeded
            };
            write(&r, None, &p).unwrap();
        }
        // tmr_1 holds the odd ones; none of them is a multiple of 4.
        let mut q1 = q(3);
        q1.reader = Some("tmr_1".into());
        q1.status = Some(Status::Canceled);
        assert!(page(&r, &q1).unwrap().items.is_empty());
        q1.reader = Some("tmr_2".into());
        assert_eq!(ids(&page(&r, &q1).unwrap()), ["pay_40", "pay_36", "pay_32"]);
        q1.starting_after = Some("pay_32".into());
        q1.limit = 100;
        let rest = page(&r, &q1).unwrap();
        assert_eq!(
            ids(&rest),
            ["pay_28", "pay_24", "pay_20", "pay_16", "pay_12", "pay_08", "pay_04"]
        );
        assert!(!rest.has_more);
        // A status change moves the payment to the reader's other range.
        let old = r.get::<Payment>(Tree::Payments, "pay_40").unwrap().unwrap();
        let mut new = old.clone();
        new.status = Status::Succeeded;
        write(&r, Some(&old), &new).unwrap();
        q1.starting_after = None;
        q1.limit = 1;
        assert_eq!(ids(&page(&r, &q1).unwrap()), ["pay_36"]);
        q1.status = None;
        assert_eq!(ids(&page(&r, &q1).unwrap()), ["pay_40"]);
        // The unfiltered list merges every status range, newest first, with no gap.
        let mut all = Vec::new();
        let mut next = q(7);
        loop {
            let p = page(&r, &next).unwrap();
            all.extend(p.items.iter().map(|p| p.id.clone()));
            if !p.has_more {
                break;
            }
            next.starting_after = all.last().cloned();
        }
        let want: Vec<String> = (1..=40).rev().map(|i| format!("pay_{i:02}")).collect();
        assert_eq!(all, want);
        assert!(verify(&r).unwrap().is_empty());
    }

    #[test]
    fn an_interrupted_step_from_schema_3_resumes_after_its_mark() {
        let r = five();
        // Interrupted after pay_3: its entries and those before it were written, the
        // others not yet.
        let mut b = Batch::default();
        for i in 4..=5 {
            let p = r
                .get::<Payment>(Tree::Payments, &format!("pay_{i}"))
                .unwrap()
                .unwrap();
            b.remove(TREE, format!("rs/tmr%2F1/queued/{}", position(&p)));
        }
        b.put(Tree::Meta, MIGRATION_4_MARK, b"pay_3".to_vec());
        b.put(Tree::Meta, "schema_version", b"3".to_vec());
        r.apply(b).unwrap();
        assert_eq!(verify(&r).unwrap().len(), 2);
        let r = Registry::with_store(r.store().clone(), "test").unwrap();
        assert!(verify(&r).unwrap().is_empty());
        assert_eq!(r.store().get(Tree::Meta, MIGRATION_4_MARK).unwrap(), None);
        // The mark is honoured: a payment before it is not written again.
        let mut b = Batch::default();
        let p1 = r.get::<Payment>(Tree::Payments, "pay_1").unwrap().unwrap();
        b.remove(TREE, format!("rs/tmr%2F1/queued/{}", position(&p1)));
        b.put(Tree::Meta, MIGRATION_4_MARK, b"pay_3".to_vec());
        b.put(Tree::Meta, "schema_version", b"3".to_vec());
        r.apply(b).unwrap();
        let r = Registry::with_store(r.store().clone(), "test").unwrap();
        assert_eq!(verify(&r).unwrap().len(), 1);
    }
}
