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
//! | `t/<time>/<id>` | empty | the list, newest first; retention, oldest first |
//! | `m/<merchant>/<time>/<id>` | empty | `?merchant=`, a pos client's scope |
//! | `ms/<merchant>/<status>/<time>/<id>` | empty | `?merchant=&status=` |
//! | `r/<reader>/<time>/<id>` | empty | `?reader=` |
//! | `s/<status>/<time>/<id>` | empty | `?status=`; the open payments reconcile reads |
//! | `td/<time>/<id>` | empty | a payment that owes transfers (start-up, the sweep) |
//! | `i/<payment intent>` | payment id | webhook hints |
//! | `a/<id>` | `<time>/<id>` | an archived payment, so that a cursor naming it still pages |
//! | `rp/<refund key>` | empty | a pending refund (written by `refunds`), for reconcile |
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
        (format!("t/{pos}"), Vec::new()),
        (format!("r/{}/{pos}", part(&p.reader)), Vec::new()),
        (format!("s/{st}/{pos}"), Vec::new()),
    ];
    if super::engine::Engine::transfers_due(p) {
        out.push((format!("td/{pos}"), Vec::new()));
    }
    // A basket is listed under each of its merchants.
    let mut merchants = p.merchants();
    merchants.sort_unstable();
    merchants.dedup();
    for m in merchants {
        let m = part(m);
        out.push((format!("m/{m}/{pos}"), Vec::new()));
        out.push((format!("ms/{m}/{st}/{pos}"), Vec::new()));
    }
    if let Some(pi) = &p.payment_intent {
        out.push((format!("i/{}", part(pi)), p.id.clone().into_bytes()));
    }
    out
}

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

/// Builds every payment's index entries (the step of the store's schema 2 → 3). Idempotent:
/// a step interrupted by a crash is simply run again. Reads the payments a chunk at a time.
pub fn rebuild(registry: &Registry) -> Result<usize, StoreError> {
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
    super::refunds::rebuild(registry)?;
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

/// Calls `f` with every payment created before `before`, oldest first, `chunk` at a time,
/// until `f` answers `false`.
pub(crate) fn for_each_created_before(
    registry: &Registry,
    before: Timestamp,
    chunk: usize,
    mut f: impl FnMut(Payment) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let bound = format!("t/{}", time(before));
    let mut after: Option<String> = None;
    loop {
        let rows =
            registry
                .store()
                .scan_range(TREE, "t/", after.as_deref(), chunk.max(1), false)?;
        let done = rows.len() < chunk.max(1);
        for (k, _) in rows {
            if k >= bound {
                return Ok(());
            }
            if let Some(p) = registry.get::<Payment>(Tree::Payments, id_of(&k))? {
                if !f(p)? {
                    return Ok(());
                }
            }
            after = Some(k);
        }
        if done {
            return Ok(());
        }
    }
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

/// One index range read newest first, a chunk at a time.
struct Source {
    prefix: String,
    /// The last key read (or the bound to read below).
    after: Option<String>,
    buf: VecDeque<String>,
    done: bool,
}

impl Source {
    fn new(prefix: String, below: &[String]) -> Source {
        // Start strictly below the smallest of the bounds (cursor, `created_lt`).
        let after = below.iter().map(|b| format!("{prefix}{b}")).min();
        Source {
            prefix,
            after,
            buf: VecDeque::new(),
            done: false,
        }
    }

    /// The position (`<time>/<id>`) of the next entry, reading a chunk if needed.
    fn head(&mut self, registry: &Registry, chunk: usize) -> Result<Option<&str>, StoreError> {
        if self.buf.is_empty() && !self.done {
            let rows = registry.store().scan_range(
                TREE,
                &self.prefix,
                self.after.as_deref(),
                chunk,
                true,
            )?;
            self.done = rows.len() < chunk;
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

/// A page of payments, newest first (by creation time, then id), that pass every filter.
pub fn page(registry: &Registry, q: &PageQuery) -> Result<Page, PageError> {
    let limit = q.limit.max(1);
    let allowed = |m: &str| q.scope.as_ref().is_none_or(|s| s.iter().any(|x| x == m));
    // A payment is the caller's when every merchant it is for is (a basket's too).
    let visible = |p: &Payment| p.merchants().iter().all(|m| allowed(m));
    let status = q.status.map(Status::as_str);
    // The index ranges to merge: the narrowest the filters allow.
    let prefixes: Vec<String> = if let Some(r) = &q.reader {
        vec![format!("r/{}/", part(r))]
    } else if let Some(m) = &q.merchant {
        if !allowed(m) {
            return Ok(Page::default());
        }
        match status {
            Some(st) => vec![format!("ms/{}/{st}/", part(m))],
            None => vec![format!("m/{}/", part(m))],
        }
    } else if let Some(scope) = &q.scope {
        let mut ms: Vec<&String> = scope.iter().collect();
        ms.sort();
        ms.dedup();
        ms.into_iter()
            .map(|m| match status {
                Some(st) => format!("ms/{}/{st}/", part(m)),
                None => format!("m/{}/", part(m)),
            })
            .collect()
    } else if let Some(st) = status {
        vec![format!("s/{st}/")]
    } else {
        vec!["t/".to_string()]
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
    let mut sources: Vec<Source> = prefixes
        .into_iter()
        .map(|p| Source::new(p, &below))
        .collect();
    let chunk = (limit + 1).min(1001);
    let mut items = Vec::new();
    let mut last: Option<String> = None;
    loop {
        // The newest head among the sources.
        let mut best: Option<(usize, String)> = None;
        for (i, s) in sources.iter_mut().enumerate() {
            if let Some(h) = s.head(registry, chunk)? {
                if best.as_ref().is_none_or(|(_, b)| h > b.as_str()) {
                    best = Some((i, h.to_string()));
                }
            }
        }
        let Some((i, pos)) = best else { break };
        sources[i].buf.pop_front();
        // A basket of several merchants in scope comes from each merchant's range: once.
        if last.as_deref() == Some(pos.as_str()) {
            continue;
        }
        last = Some(pos.clone());
        if floor.as_ref().is_some_and(|f| pos.as_str() < f.as_str()) {
            // Every other head is older still.
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
            if !k.starts_with("a/") && !k.starts_with("rp/") {
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
            // What readerd of schema 2 wrote: the records alone.
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
            assert_eq!(verify(&r).unwrap().len(), 2500 * 5);
        }
        let r = Registry::open(dir.path()).unwrap();
        assert!(verify(&r).unwrap().is_empty());
        assert_eq!(
            r.store()
                .get(Tree::Meta, "schema_version")
                .unwrap()
                .unwrap(),
            b"3"
        );
        let p = page(&r, &q(3)).unwrap();
        assert_eq!(ids(&p), ["pay_02500", "pay_02499", "pay_02498"]);
    }
}
