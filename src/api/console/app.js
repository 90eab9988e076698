// readerd console: readers and payments, live, from the daemon's own API.
//
// No framework and nothing external: the page must work in a venue without internet, under
// a Content-Security-Policy that allows only this script, this stylesheet and requests to
// this daemon. Data is put into the page with textContent only, never as HTML.
//
// The token is kept in sessionStorage (this tab only, gone when it closes) and sent in the
// Authorization header. EventSource cannot send that header, so the live stream is read
// with fetch() and a small text/event-stream parser; the token never goes into a URL.
'use strict';

(() => {
  const TOKEN_KEY = 'readerd.token';
  const LIST_LIMIT = 100;
  const READERS_EVERY_MS = 10000;
  // Stripe's currencies without a minor unit, and with three decimals (cli/money.rs too).
  const ZERO_DECIMAL = new Set(['bif', 'clp', 'djf', 'gnf', 'jpy', 'kmf', 'krw', 'mga', 'pyg',
    'rwf', 'ugx', 'vnd', 'vuv', 'xaf', 'xof', 'xpf']);
  const THREE_DECIMAL = new Set(['bhd', 'jod', 'kwd', 'omr', 'tnd']);

  const state = {
    token: null,
    admin: false,
    readers: new Map(),
    payments: new Map(),
    merchants: new Set(),
    filter: { merchant: '', status: '' },
    abort: null,
    timers: [],
    readersPending: null,
  };

  const $ = (id) => document.getElementById(id);

  // ---- small helpers ------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function exponent(currency) {
    const c = String(currency || '').toLowerCase();
    if (ZERO_DECIMAL.has(c)) return 0;
    if (THREE_DECIMAL.has(c)) return 3;
    return 2;
  }

  // 1250 eur → "12.50" (with code: "12.50 EUR").
  function decimal(amount, currency) {
    const e = exponent(currency);
    if (e === 0) return String(amount);
    const unit = 10 ** e;
    const abs = Math.abs(amount);
    const s = Math.floor(abs / unit) + '.' + String(abs % unit).padStart(e, '0');
    return amount < 0 ? '-' + s : s;
  }

  function money(amount, currency) {
    if (typeof amount !== 'number') return '–';
    return decimal(amount, currency) + ' ' + String(currency || '').toUpperCase();
  }

  // "12.5" in eur → 1250; null when it is not an amount of that currency.
  function parseMoney(text, currency) {
    const e = exponent(currency);
    const m = /^\s*(\d+)(?:[.,](\d*))?\s*$/.exec(text);
    if (!m) return null;
    const frac = m[2] || '';
    if (frac.length > e) return null;
    return Number(m[1]) * 10 ** e + Number(frac.padEnd(e, '0') || 0);
  }

  function ago(iso) {
    if (!iso) return 'never';
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    return new Date(iso).toLocaleDateString();
  }

  function clock(iso) {
    const d = new Date(iso);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function randomKey() {
    // crypto.randomUUID exists only in secure contexts; a LAN address over http is not one.
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return 'console_' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function notice(text, bad) {
    const n = $('notice');
    n.textContent = text;
    n.classList.toggle('bad', !!bad);
    n.hidden = !text;
  }

  // ---- the API --------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body, headers) {
    const h = Object.assign({ Authorization: 'Bearer ' + state.token }, headers || {});
    const init = { method, headers: h, cache: 'no-store' };
    if (body !== undefined) {
      h['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    const text = await r.text();
    let v = null;
    try { v = text ? JSON.parse(text) : null; } catch (_) { v = null; }
    if (r.status === 401) {
      signOut('The daemon refused this token. Sign in again.');
      throw new ApiError(401, 'unauthorized', 'signed out');
    }
    if (!r.ok) {
      const e = (v && v.error) || {};
      throw new ApiError(r.status, e.code || 'error', e.message || r.status + ' ' + r.statusText);
    }
    return v;
  }

  // ---- sign in and out --------------------------------------------------------------------

  function tokenFromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ''));
    const t = (params.get('token') || '').trim();
    if (params.has('token')) {
      // Out of the address bar and the history as soon as it is read.
      history.replaceState(null, '', location.pathname + location.search);
    }
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
  }

  function showSignIn(message) {
    $('app').hidden = true;
    $('session').hidden = true;
    $('sign-in').hidden = false;
    $('sign-in-error').textContent = message || '';
    $('token').value = '';
    $('token').focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    if (state.abort) state.abort.abort();
    state.abort = null;
    for (const t of state.timers) clearInterval(t);
    state.timers = [];
    state.readers.clear();
    state.payments.clear();
    state.merchants.clear();
    $('readers').replaceChildren();
    $('payments').replaceChildren();
    notice('');
    showSignIn(message);
  }

  async function signIn(token) {
    state.token = token;
    // The role decides what the console offers; the API decides what it allows.
    try {
      const merchants = await api('GET', '/v1/merchants');
      state.admin = true;
      for (const m of merchants || []) state.merchants.add(m.id);
    } catch (e) {
      if (e.status === 401) return;
      if (e.status !== 403) {
        state.token = null;
        showSignIn('The daemon did not answer: ' + e.message);
        return;
      }
      state.admin = false;
    }
    $('sign-in').hidden = true;
    $('app').hidden = false;
    $('session').hidden = false;
    $('who').textContent = state.admin ? 'admin' : 'pos';
    renderMerchantFilter();
    state.timers.push(setInterval(loadReaders, READERS_EVERY_MS));
    state.timers.push(setInterval(renderReaders, 5000)); // "last seen" ages
    follow();
  }

  // ---- loading ----------------------------------------------------------------------------

  async function loadReaders() {
    if (!state.token) return;
    try {
      const list = await api('GET', '/v1/readers');
      state.readers = new Map(list.map((r) => [r.id, r]));
      for (const r of list) for (const m of r.merchants || []) state.merchants.add(m);
      renderReaders();
      renderMerchantFilter();
      renderPayments();
    } catch (e) {
      if (e.status !== 401) notice('Readers: ' + e.message, true);
    }
  }

  // Many payment events in a burst ask for one readers read.
  function readersSoon() {
    if (state.readersPending) return;
    state.readersPending = setTimeout(() => {
      state.readersPending = null;
      loadReaders();
    }, 300);
  }

  async function loadPayments() {
    if (!state.token) return;
    const q = new URLSearchParams({ limit: String(LIST_LIMIT) });
    if (state.filter.merchant) q.set('merchant', state.filter.merchant);
    if (state.filter.status) q.set('status', state.filter.status);
    try {
      const list = await api('GET', '/v1/payments?' + q);
      state.payments = new Map(list.map((p) => [p.id, p]));
      for (const p of list) state.merchants.add(p.merchant);
      renderMerchantFilter();
      renderPayments();
      renderReaders();
    } catch (e) {
      if (e.status !== 401) notice('Payments: ' + e.message, true);
    }
  }

  function matches(p) {
    return (!state.filter.merchant || p.merchant === state.filter.merchant)
      && (!state.filter.status || p.status === state.filter.status);
  }

  function applyPayment(p) {
    state.merchants.add(p.merchant);
    const known = state.payments.get(p.id);
    if (known && known.updated_at > p.updated_at) return; // an older change, late
    if (matches(p)) state.payments.set(p.id, p);
    else state.payments.delete(p.id);
    renderPayments(p.id);
    renderReaders();
    readersSoon();
  }

  // ---- the live stream --------------------------------------------------------------------

  function setLive(live, text) {
    const l = $('live');
    l.dataset.live = String(live);
    l.textContent = text || (live ? 'Live' : 'Reconnecting…');
  }

  // One text/event-stream block → {event, data}; null for comments (keep-alives).
  function parseBlock(block) {
    let event = null;
    const data = [];
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? '' : line.slice(i + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (event === null && data.length === 0) return null;
    return { event: event || 'message', data: data.join('\n') };
  }

  function onEvent(ev) {
    if (ev.event === 'ready' || ev.event === 'resync') {
      // Subscribed: what the lists miss from now on arrives on the stream.
      setLive(true);
      if ($('notice').classList.contains('bad')) notice(''); // errors of the outage
      loadReaders();
      loadPayments();
    } else if (ev.event === 'payment') {
      try { applyPayment(JSON.parse(ev.data)); } catch (_) { /* not a payment: ignore */ }
    }
  }

  async function follow() {
    let wait = 500;
    while (state.token) {
      const ctrl = new AbortController();
      state.abort = ctrl;
      try {
        const r = await fetch('/v1/events', {
          headers: { Authorization: 'Bearer ' + state.token, Accept: 'text/event-stream' },
          cache: 'no-store',
          signal: ctrl.signal,
        });
        if (r.status === 401) {
          signOut('The daemon refused this token. Sign in again.');
          return;
        }
        if (!r.ok || !r.body) throw new Error('events: ' + r.status);
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const ev = parseBlock(buf.slice(0, i));
            buf = buf.slice(i + 2);
            if (ev) {
              wait = 500;
              onEvent(ev);
            }
          }
        }
      } catch (e) {
        if (ctrl.signal.aborted) return;
      }
      if (!state.token || ctrl.signal.aborted) return;
      setLive(false);
      await sleep(wait);
      wait = Math.min(wait * 2, 10000);
    }
  }

  // ---- rendering --------------------------------------------------------------------------

  function readerName(id) {
    const r = state.readers.get(id);
    return r ? r.label || r.id : id;
  }

  const WAITING = {
    reader_busy: 'reader busy',
    reader_offline: 'reader offline',
    card: 'waiting for card',
    authorisation: 'authorising',
    reader_not_picked_up: 'not picked up',
  };

  function statusPill(p) {
    return el('span', { class: 'pill ' + p.status, text: p.status.replace('_', ' ') });
  }

  function currentPayment(readerId) {
    let current = null;
    for (const p of state.payments.values()) {
      if (p.reader !== readerId) continue;
      if (p.status === 'processing') return p;
      if (p.status === 'queued' && (!current || p.created_at < current.created_at)) current = p;
    }
    return current;
  }

  function renderReaders() {
    const list = [...state.readers.values()].sort((a, b) => a.label.localeCompare(b.label));
    $('readers-count').textContent = list.length ? String(list.length) : '';
    const cards = list.map((r) => {
      const p = currentPayment(r.id);
      const current = p
        ? el('div', { class: 'current' },
          el('strong', { text: money(p.amount, p.currency) }), ' · ', p.merchant, ' ',
          statusPill(p),
          el('span', { class: 'sub muted', text: WAITING[p.waiting_for] || p.id }))
        : el('div', { class: 'current' }, el('span', { class: 'muted', text: 'No payment' }));
      return el('article', {
        class: 'reader ' + r.status + (r.gone ? ' gone' : ''),
        'data-reader-id': r.id,
      },
      el('header', {},
        el('h3', { text: r.label || r.id, title: r.id }),
        el('span', { class: 'pill ' + (r.gone ? 'gone' : r.status), text: r.gone ? 'gone' : r.status })),
      el('dl', {},
        el('dt', { text: 'Last seen' }), el('dd', { text: ago(r.last_seen_at), title: r.last_seen_at || '' }),
        el('dt', { text: 'Busy' }), el('dd', {}, r.busy ? el('span', { class: 'pill busy', text: 'busy' }) : 'idle'),
        el('dt', { text: 'Queue' }), el('dd', { 'data-queue': r.queue_depth, text: String(r.queue_depth) })),
      current,
      state.admin
        ? el('footer', {}, el('button', {
          type: 'button', class: 'quiet small', 'data-action': 'clear',
          onclick: () => confirmClear(r),
        }, 'Force-clear…'))
        : null);
    });
    $('readers').replaceChildren(...cards);
  }

  function actions(p) {
    const out = [];
    const b = (action, label, fn) => el('button', {
      type: 'button', class: 'small' + (action === 'cancel' ? ' quiet' : ''), 'data-action': action, onclick: fn,
    }, label);
    if (['queued', 'processing', 'requires_capture', 'declined'].includes(p.status) && !p.cancel_requested) {
      out.push(b('cancel', 'Cancel', () => confirmCancel(p)));
    }
    if (p.status === 'requires_capture') out.push(b('capture', 'Capture', () => confirmCapture(p)));
    if (p.status === 'succeeded' && p.amount_refunded < p.amount_captured) {
      out.push(b('refund', 'Refund', () => confirmRefund(p)));
    }
    return out;
  }

  function renderPayments(freshId) {
    const list = [...state.payments.values()]
      .sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0))
      .slice(0, LIST_LIMIT);
    $('payments-count').textContent = list.length ? String(list.length) : '';
    $('payments-empty').hidden = list.length > 0;
    const rows = list.map((p) => {
      const waiting = WAITING[p.waiting_for];
      const failure = p.failure && p.failure.code;
      const final = ['succeeded', 'canceled', 'failed'].includes(p.status);
      const note = p.cancel_requested && !final ? 'cancel requested' : waiting || failure;
      return el('tr', {
        'data-payment-id': p.id,
        'data-status': p.status,
        class: p.id === freshId ? 'fresh' : null,
      },
      el('td', { text: clock(p.created_at), title: p.created_at }),
      el('td', {}, el('span', { class: 'mono', text: p.id }),
        p.description ? el('span', { class: 'sub', text: p.description }) : null),
      el('td', { text: p.merchant }),
      el('td', { text: readerName(p.reader), title: p.reader }),
      el('td', { class: 'num' }, money(p.amount, p.currency),
        p.tip ? el('span', { class: 'sub', text: '+ tip ' + money(p.tip, p.currency) }) : null),
      el('td', {}, statusPill(p), note ? el('span', { class: 'sub', text: note }) : null),
      el('td', { class: 'num', 'data-refunded': p.amount_refunded },
        p.amount_refunded ? money(p.amount_refunded, p.currency) : '–'),
      el('td', { class: 'actions' }, ...actions(p)));
    });
    $('payments').replaceChildren(...rows);
  }

  function renderMerchantFilter() {
    const select = $('filter-merchant');
    const have = new Set([...select.options].map((o) => o.value));
    for (const m of [...state.merchants].sort()) {
      if (!have.has(m)) select.append(el('option', { value: m, text: m }));
    }
  }

  // ---- confirmations ----------------------------------------------------------------------

  // Opens the dialog; `run(inputValue)` does the call, and its error stays in the dialog.
  function confirm({ title, text, ok, field, value, run }) {
    const d = $('confirm');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = ok;
    $('confirm-error').textContent = '';
    $('confirm-field').hidden = !field;
    $('confirm-label').textContent = field || '';
    $('confirm-input').value = value || '';
    const okButton = $('confirm-ok');
    okButton.disabled = false;
    okButton.onclick = async () => {
      okButton.disabled = true;
      try {
        const message = await run($('confirm-input').value);
        d.close();
        if (message) notice(message);
      } catch (e) {
        $('confirm-error').textContent = e.message;
        okButton.disabled = false;
      }
    };
    d.showModal();
    if (field) $('confirm-input').select();
  }

  function about(p) {
    return money(p.amount, p.currency) + ' for ' + p.merchant + ' on ' + readerName(p.reader);
  }

  function confirmCancel(p) {
    confirm({
      title: 'Cancel this payment?',
      text: about(p) + ' (' + p.id + '). It is canceled once Stripe confirms; '
        + 'a payment the customer is paying may still succeed.',
      ok: 'Cancel payment',
      run: async () => {
        applyPayment(await api('POST', '/v1/payments/' + encodeURIComponent(p.id) + '/cancel'));
        return 'Cancel requested for ' + p.id + '.';
      },
    });
  }

  function confirmCapture(p) {
    confirm({
      title: 'Capture this payment?',
      text: about(p) + ' (' + p.id + ') is authorised. Capture all of it or less.',
      ok: 'Capture',
      field: 'Amount (' + p.currency.toUpperCase() + ')',
      value: decimal(p.amount, p.currency),
      run: async (v) => {
        const amount = parseMoney(v, p.currency);
        if (amount === null || amount <= 0) throw new Error('Write an amount such as ' + decimal(p.amount, p.currency) + '.');
        const body = amount === p.amount ? {} : { amount };
        applyPayment(await api('POST', '/v1/payments/' + encodeURIComponent(p.id) + '/capture', body));
        return 'Captured ' + money(amount, p.currency) + ' of ' + p.id + '.';
      },
    });
  }

  function confirmRefund(p) {
    const left = p.amount_captured - p.amount_refunded;
    const key = randomKey(); // one refund per dialog, however often the button is pressed
    confirm({
      title: 'Refund this payment?',
      text: about(p) + ' (' + p.id + '). ' + money(left, p.currency) + ' can still be refunded.',
      ok: 'Refund',
      field: 'Amount (' + p.currency.toUpperCase() + ')',
      value: decimal(left, p.currency),
      run: async (v) => {
        const amount = parseMoney(v, p.currency);
        if (amount === null || amount <= 0 || amount > left) {
          throw new Error('Write an amount up to ' + decimal(left, p.currency) + '.');
        }
        const r = await api('POST', '/v1/payments/' + encodeURIComponent(p.id) + '/refunds',
          { amount }, { 'Idempotency-Key': key });
        if (r && r.payment_object) applyPayment(r.payment_object);
        return 'Refund of ' + money(amount, p.currency) + ' ' + (r ? r.status : '') + ' for ' + p.id + '.';
      },
    });
  }

  // The blocking PaymentIntent, when a payment waiting behind it names it.
  function blockingIntent(readerId) {
    for (const p of state.payments.values()) {
      if (p.reader !== readerId || p.waiting_for !== 'reader_busy') continue;
      for (const h of [...(p.history || [])].reverse()) {
        const m = /\bpi_[A-Za-z0-9]+/.exec(h.note || '');
        if (m) return m[0];
      }
    }
    return '';
  }

  function confirmClear(r) {
    confirm({
      title: 'Force-clear ' + (r.label || r.id) + '?',
      text: 'Cancels the action on the reader only if it still holds this PaymentIntent. '
        + 'Use it for an action someone else left on the reader.',
      ok: 'Force-clear',
      field: 'PaymentIntent on the reader',
      value: blockingIntent(r.id),
      run: async (v) => {
        const pi = v.trim();
        if (!/^pi_\w+$/.test(pi)) throw new Error('Give the PaymentIntent id (pi_…).');
        await api('POST', '/v1/readers/' + encodeURIComponent(r.id) + '/clear', { payment_intent: pi });
        readersSoon();
        return 'Cleared ' + pi + ' from ' + (r.label || r.id) + '.';
      },
    });
  }

  // ---- start --------------------------------------------------------------------------------

  function start() {
    $('sign-in-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const t = $('token').value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      signIn(t);
    });
    $('sign-out').addEventListener('click', () => signOut('Signed out.'));
    $('confirm-cancel').addEventListener('click', () => $('confirm').close());
    $('filter-merchant').addEventListener('change', (e) => {
      state.filter.merchant = e.target.value;
      loadPayments();
    });
    $('filter-status').addEventListener('change', (e) => {
      state.filter.status = e.target.value;
      loadPayments();
    });
    window.addEventListener('hashchange', () => {
      const before = state.token;
      tokenFromFragment();
      const t = sessionStorage.getItem(TOKEN_KEY);
      if (t && t !== before) {
        if (before) {
          signOut();
          sessionStorage.setItem(TOKEN_KEY, t);
        }
        signIn(t);
      }
    });
    tokenFromFragment();
    const t = sessionStorage.getItem(TOKEN_KEY);
    if (t) signIn(t);
    else showSignIn();
  }

  start();
})();
