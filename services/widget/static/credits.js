/*
 * creditrail's credits component: <creditrail-credits>, served as /widget.js.
 *
 * mode="badge" (the default): a button for a platform's top bar showing the balance; a click opens the panel in a
 * dialog (Escape or Close shuts it, and focus goes back to the button). mode="page": the same panel at full width,
 * as /credits shows it. The panel shows the balance, buying (packs or a custom amount), USDC funding per chain
 * (address, copy, QR code and EIP-681 link with the amount typed, deposits waiting for confirmations),
 * auto-recharge, alerts and budgets, recent transactions, lots and purchases (with receipts), with "Load more".
 *
 * The token: in badge mode the host sets it (attribute `session`, property `session` or `setSession(token)`),
 * rendered by its backend from POST /v1/admin/customer-sessions; when it expires or is revoked the element fires
 * `creditrail:session-expired` (bubbling, composed; detail {code, returnUrl}) so the host can fetch a new one.
 * In page mode the token comes from the URL's fragment (#session=crs_...), is wiped from the address bar and kept
 * for the tab (sessionStorage); a developer may paste a customer API key instead.
 *
 * Live: the balance, purchases, transactions and deposits are polled every few seconds while the panel is open
 * and the tab visible (slower when hidden; the closed badge polls the balance only). Each Buy click sends a fresh
 * Idempotency-Key and disables its button until the answer, so one click buys once. Every error is shown beside
 * what caused it. No framework, no build step, no inline script or style (the pages' CSP forbids them).
 */
(() => {
  "use strict";

  const SCRIPT_URL = document.currentScript && document.currentScript.src ? document.currentScript.src : "";
  // The API's base: where this script came from (so a platform's page calls creditrail, not itself).
  const SCRIPT_BASE = SCRIPT_URL ? SCRIPT_URL.replace(/\/widget\.js(?:[?#].*)?$/, "") : "";

  const SESSION_ITEM = "creditrail-session";
  const KEY_ITEM = "creditrail-key";
  const POLL_OPEN_MS = 4000;
  const POLL_CLOSED_MS = 15000;
  const POLL_HIDDEN_MS = 30000;
  const PAGE_SIZE = 10;
  const AMOUNT_DEBOUNCE_MS = 400;
  // Polling renews the session as any request does: with nobody at the keyboard or mouse this long it stops, so an
  // unattended tab lets the session expire as it should; the next key or click starts it again.
  const IDLE_STOP_MS = 10 * 60 * 1000;

  // Human labels of the ledger's transaction kinds (the only place they are named for people).
  const KIND_LABELS = {
    mint: "Purchase",
    grant: "Promotional credits",
    spend: "Usage",
    capture: "Tool call",
    expiry: "Credits expired",
    clawback: "Refund or dispute",
    reinstatement: "Dispute won: credits restored",
    adjustment: "Adjustment",
  };
  const RAIL_LABELS = { card: "Card", usdc: "USDC", grant: "Promotion", adjustment: "Adjustment" };
  // Purchase statuses by rail (a card purchase "pending" is starting; a deposit "pending" awaits confirmations).
  const STATUS_LABELS = {
    card: {
      pending: "Starting", open: "Awaiting payment", processing: "Processing", completed: "Paid", failed: "Failed",
      expired: "Expired", review: "Under review",
    },
    usdc: {
      pending: "Confirming", credited: "Credited", carried: "Below the minimum: carried to the next deposit",
      orphaned: "Dropped by the chain", set_aside: "Set aside for review",
    },
  };
  const statusLabel = (rail, status) => (STATUS_LABELS[rail] || {})[status] || status;

  // --- formatting (display only: amounts arrive as integers, in the unit their name says) ---------------------

  const NUMBER = new Intl.NumberFormat("en-US");
  const fmtCredits = (n) => NUMBER.format(n);
  function digitsWithCommas(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }
  // An integer amount with `scale` decimals, as exact text (no floating point): 1234567, 6 -> "1.234567".
  function scaled(amount, scale, minDecimals) {
    const negative = String(amount).startsWith("-");
    const digits = String(amount).replace("-", "").padStart(scale + 1, "0");
    const whole = digits.slice(0, digits.length - scale);
    let fraction = digits.slice(digits.length - scale).replace(/0+$/, "");
    fraction = fraction.padEnd(minDecimals, "0");
    return (negative ? "-" : "") + digitsWithCommas(whole) + (fraction ? "." + fraction : "");
  }
  const fmtUsd = (cents) => "$" + scaled(cents, 2, 2);
  const fmtUsdc = (units) => scaled(units, 6, 2) + " USDC";
  const fmtDate = (iso) => (iso ? new Date(iso).toLocaleDateString("en-US", { year: "numeric", month: "short", day: "numeric" }) : "");
  const fmtDateTime = (iso) => (iso ? new Date(iso).toLocaleString("en-US", { dateStyle: "medium", timeStyle: "short" }) : "");

  // A typed USDC amount ("25", "12.5") as base units (decimal text), or null when it is not one.
  function usdcUnitsOf(text) {
    const match = /^\s*(\d{1,15})(?:\.(\d{0,6}))?\s*$/.exec(text);
    if (!match) return null;
    const units = (match[1] + (match[2] || "").padEnd(6, "0")).replace(/^0+(?=\d)/, "");
    return units;
  }

  // --- DOM helpers --------------------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details || {};
    }
  }
  const SESSION_ENDED = new Set(["session_expired", "session_revoked"]);
  // What a person can do about an error, where the API's own message speaks to programs.
  const ERROR_ADVICE = {
    no_saved_card: "Save a card first: tick “Save my card for auto-recharge” and buy credits by card.",
    rail_not_configured: "Card payments are not available here.",
    budget_name_taken: "A budget of that name exists already.",
  };

  const PANEL = `
<div class="panel-head">
  <h2 id="title">Credits</h2>
  <p id="session-bar" class="session-bar" hidden><a id="back" href="#" hidden></a>
    <button type="button" id="logout" class="link">Sign out</button></p>
  <button type="button" id="close" class="close" hidden aria-label="Close credits">Close</button>
</div>
<p id="notice" class="notice" role="status"></p>
<div id="ended" hidden>
  <p id="ended-message" class="error" role="alert"></p>
  <p><a id="ended-back" href="#" hidden></a></p>
</div>
<details id="developer" hidden>
  <summary>Developers: use an API key instead</summary>
  <form id="key-form" class="inline-form">
    <label>API key <input id="key" type="password" autocomplete="off" placeholder="cr_..."></label>
    <button type="submit">Show my credits</button> <button type="button" id="forget">Forget the key</button>
  </form>
</details>
<p id="error" class="error" role="alert"></p>
<div id="account" hidden>
  <section aria-labelledby="h-balance" class="card balance">
    <h3 id="h-balance">Balance</h3>
    <div aria-live="polite" aria-atomic="true">
      <p class="figure"><span id="available"></span> <span id="available-usd" class="muted"></span></p>
    </div>
    <dl class="facts">
      <div><dt>Reserved</dt><dd id="reserved"></dd></div>
      <div><dt>Owed</dt><dd id="owed"></dd></div>
      <div><dt>Next expiry</dt><dd id="next-expiry"></dd></div>
      <div><dt>Expiring within 30 days</dt><dd id="expiring-30"></dd></div>
    </dl>
  </section>
  <section aria-labelledby="h-buy" class="card">
    <h3 id="h-buy">Buy credits</h3>
    <ul id="packs" class="packs"></ul>
    <form id="custom-form" class="inline-form" novalidate>
      <label>Custom amount (credits) <input id="custom-credits" type="number" inputmode="numeric"></label>
      <button type="submit" id="custom-buy">Buy</button>
    </form>
    <label class="check"><input type="checkbox" id="save-card"> Save my card for auto-recharge</label>
    <p id="buy-error" class="error" role="alert"></p>
  </section>
  <section aria-labelledby="h-usdc" class="card">
    <h3 id="h-usdc">Fund with USDC</h3>
    <div id="usdc"></div>
    <div id="pending-deposits" aria-live="polite"></div>
  </section>
  <section aria-labelledby="h-recharge" class="card">
    <h3 id="h-recharge">Auto-recharge</h3>
    <p id="recharge-state"></p>
    <p id="recharge-card" class="muted"></p>
    <p id="recharge-failure" class="error"></p>
    <form id="recharge-form" class="stack-form" novalidate>
      <label class="check"><input type="checkbox" id="recharge-enabled"> Recharge automatically</label>
      <label>When the balance falls below (credits) <input id="recharge-threshold" type="number" min="0" inputmode="numeric"></label>
      <label>Buy <select id="recharge-pack"></select></label>
      <button type="submit" id="recharge-save">Save auto-recharge</button>
      <p id="recharge-error" class="error" role="alert"></p>
    </form>
  </section>
  <section aria-labelledby="h-alerts" class="card">
    <h3 id="h-alerts">Alerts and budgets</h3>
    <form id="alerts-form" class="stack-form" novalidate hidden>
      <label>Alert me when the balance falls below (credits) <input id="alert-threshold" type="number" min="0" inputmode="numeric" placeholder="no alert"></label>
      <label class="check"><input type="checkbox" id="alert-email"> By email</label>
      <p id="alert-state" class="muted"></p>
      <button type="submit" id="alerts-save">Save alerts</button>
      <p id="alerts-error" class="error" role="alert"></p>
    </form>
    <form id="monthly-form" class="stack-form" novalidate>
      <label>Monthly limit for the whole account (credits) <input id="monthly-limit" type="number" min="0" inputmode="numeric" placeholder="no limit"></label>
      <p id="monthly-state" class="muted"></p>
      <button type="submit" id="monthly-save">Save monthly limit</button>
      <p id="monthly-error" class="error" role="alert"></p>
    </form>
    <h4>Budgets per API key or project</h4>
    <ul id="budgets" class="rows"></ul>
  </section>
  <section aria-labelledby="h-transactions" class="card">
    <h3 id="h-transactions">Recent transactions</h3>
    <ol id="transactions" class="rows"></ol>
    <button type="button" id="more-transactions" class="more" hidden>Load more transactions</button>
    <p id="transactions-error" class="error" role="alert"></p>
  </section>
  <section aria-labelledby="h-lots" class="card">
    <h3 id="h-lots">Lots</h3>
    <ol id="lots" class="rows"></ol>
    <button type="button" id="more-lots" class="more" hidden>Load more lots</button>
    <p id="lots-error" class="error" role="alert"></p>
  </section>
  <section aria-labelledby="h-purchases" class="card">
    <h3 id="h-purchases">Purchases</h3>
    <ol id="purchases" class="rows"></ol>
    <button type="button" id="more-purchases" class="more" hidden>Load more purchases</button>
    <p id="purchases-error" class="error" role="alert"></p>
  </section>
</div>`;

  // A list that pages with "Load more" and takes in a fresh first page (polling) without losing the rest.
  class PagedList {
    constructor(host, { path, list, more, error, keyOf, render }) {
      this.host = host;
      this.path = path;
      this.list = list;
      this.more = more;
      this.error = error;
      this.keyOf = keyOf;
      this.render = render;
      this.items = [];
      this.cursor = null;
      this.hasMore = false;
      more.addEventListener("click", () => this.loadMore());
    }
    url(cursor) {
      const sep = this.path.includes("?") ? "&" : "?";
      return this.path + sep + "limit=" + PAGE_SIZE + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
    }
    async reset() {
      const page = await this.host.api(this.url(null));
      this.items = page.data;
      this.cursor = page.next_cursor;
      this.hasMore = page.has_more;
      this.draw();
    }
    // The first page again: new items go on top, changed ones are replaced, those loaded further down stay.
    async refreshHead() {
      if (!this.items.length) return this.reset();
      const page = await this.host.api(this.url(null));
      const fresh = new Set(page.data.map(this.keyOf));
      this.items = page.data.concat(this.items.filter((item) => !fresh.has(this.keyOf(item))));
      this.draw();
    }
    async loadMore() {
      if (!this.cursor || this.more.disabled) return;
      this.more.disabled = true;
      this.error.textContent = "";
      try {
        const page = await this.host.api(this.url(this.cursor));
        const known = new Set(this.items.map(this.keyOf));
        const firstNew = this.items.length;
        this.items = this.items.concat(page.data.filter((item) => !known.has(this.keyOf(item))));
        this.cursor = page.next_cursor;
        this.hasMore = page.has_more;
        this.draw();
        // Keep the keyboard where the reader is: on the first row that just came, or on the button.
        const row = this.list.children[firstNew];
        if (row) { row.tabIndex = -1; row.focus(); }
      } catch (error) {
        this.host.failed(error, this.error);
      } finally {
        this.more.disabled = false;
      }
    }
    draw() {
      this.list.replaceChildren(...this.items.map((item) => this.render(item)));
      this.more.hidden = !this.hasMore;
    }
  }

  class CreditrailCredits extends HTMLElement {
    static get observedAttributes() { return ["session"]; }

    constructor() {
      super();
      this.root = this.attachShadow({ mode: "open" });
      this._token = null;
      this._timer = null;
      this._started = false;
      this._generation = 0;
      this._balanceSeen = null;
      this._chains = [];
    }

    get mode() { return this.getAttribute("mode") === "page" ? "page" : "badge"; }
    get apiBase() { return (this.getAttribute("api-base") || SCRIPT_BASE || "").replace(/\/$/, ""); }

    // --- the host's side --------------------------------------------------------------------------------------

    get session() { return this._token; }
    set session(token) { this.setSession(token); }
    setSession(token) {
      const value = token ? String(token) : null;
      if (value === this._token) return;
      this._token = value;
      if (this.isConnected && this._started) this.start();
    }
    attributeChangedCallback(name, _old, value) {
      if (name === "session" && value) this.setSession(value);
    }

    connectedCallback() {
      if (this._started) return;
      this._started = true;
      this.build();
      if (this.mode === "page") this.startPage();
      else this.start();
      this._lastActive = Date.now();
      this._onVisibility = () => this.schedule(0);
      this._onActivity = () => {
        const idle = Date.now() - this._lastActive > IDLE_STOP_MS;
        this._lastActive = Date.now();
        if (idle) this.schedule(0);
      };
      document.addEventListener("visibilitychange", this._onVisibility);
      for (const type of ["keydown", "pointerdown"]) {
        document.addEventListener(type, this._onActivity, { passive: true, capture: true });
      }
    }
    disconnectedCallback() {
      clearTimeout(this._timer);
      document.removeEventListener("visibilitychange", this._onVisibility);
      for (const type of ["keydown", "pointerdown"]) {
        document.removeEventListener(type, this._onActivity, { capture: true });
      }
      this._started = false;
    }

    $(id) { return this.root.getElementById(id); }

    build() {
      const css = el("link", { rel: "stylesheet", href: this.apiBase + "/widget.css" });
      const panel = el("div", { id: "panel", class: "panel" });
      panel.innerHTML = PANEL; // static markup only: every value is set as text below
      let frame;
      if (this.mode === "page") {
        frame = el("div", { class: "page" }, panel);
      } else {
        this.badge = el("button", {
          type: "button", id: "badge", class: "badge", "aria-haspopup": "dialog", "aria-expanded": "false",
        }, el("span", { class: "badge-label", text: "Credits" }), " ", el("span", { id: "badge-balance", text: "…" }));
        this.dialog = el("dialog", { id: "dialog", class: "dialog", "aria-labelledby": "title" }, panel);
        frame = el("div", { class: "bar" }, this.badge, this.dialog);
        this.badge.addEventListener("click", () => this.open());
        this.dialog.addEventListener("close", () => this.closed());
        // A click on the backdrop (outside the panel) closes too.
        this.dialog.addEventListener("click", (event) => { if (event.target === this.dialog) this.close(); });
      }
      this.root.replaceChildren(css, frame);
      if (this.mode === "badge") this.$("close").hidden = false;
      this.$("close").addEventListener("click", () => this.close());
      this.wire();
    }

    wire() {
      this.transactions = new PagedList(this, {
        path: "/v1/transactions", list: this.$("transactions"), more: this.$("more-transactions"),
        error: this.$("transactions-error"), keyOf: (t) => t.id, render: (t) => this.transactionRow(t),
      });
      this.lots = new PagedList(this, {
        path: "/v1/lots", list: this.$("lots"), more: this.$("more-lots"),
        error: this.$("lots-error"), keyOf: (l) => l.id, render: (l) => this.lotRow(l),
      });
      this.purchases = new PagedList(this, {
        path: "/v1/purchases", list: this.$("purchases"), more: this.$("more-purchases"),
        error: this.$("purchases-error"), keyOf: (p) => p.rail + ":" + p.id, render: (p) => this.purchaseRow(p),
      });
      this.$("custom-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.buyCustom();
      });
      this.$("recharge-form").addEventListener("submit", (event) => { event.preventDefault(); this.saveRecharge(); });
      this.$("alerts-form").addEventListener("submit", (event) => { event.preventDefault(); this.saveAlerts(); });
      this.$("monthly-form").addEventListener("submit", (event) => { event.preventDefault(); this.saveMonthly(); });
      this.$("key-form").addEventListener("submit", (event) => {
        event.preventDefault();
        sessionStorage.removeItem(SESSION_ITEM);
        sessionStorage.setItem(KEY_ITEM, this.$("key").value.trim());
        this.$("key").value = "";
        this._token = sessionStorage.getItem(KEY_ITEM);
        this.start();
      });
      this.$("forget").addEventListener("click", () => {
        sessionStorage.removeItem(KEY_ITEM);
        this._token = null;
        clearTimeout(this._timer);
        this.$("account").hidden = true;
      });
      this.$("logout").addEventListener("click", () => this.logout());
    }

    // --- opening and closing (badge) --------------------------------------------------------------------------

    open() {
      if (!this.dialog || this.dialog.open) return;
      this.dialog.showModal();
      this.badge.setAttribute("aria-expanded", "true");
      this.$("close").focus();
      this.schedule(0);
    }
    close() { if (this.dialog && this.dialog.open) this.dialog.close(); }
    closed() {
      this.badge.setAttribute("aria-expanded", "false");
      this.badge.focus();
    }
    get showing() { return this.mode === "page" || (this.dialog && this.dialog.open); }

    // --- the page (/credits) ----------------------------------------------------------------------------------

    startPage() {
      const fragment = new URLSearchParams(window.location.hash.slice(1));
      const token = fragment.get("session");
      if (token) {
        sessionStorage.setItem(SESSION_ITEM, token);
        sessionStorage.removeItem(KEY_ITEM);
        history.replaceState(null, "", window.location.pathname + window.location.search);
      }
      this._token = sessionStorage.getItem(SESSION_ITEM) || sessionStorage.getItem(KEY_ITEM);
      if (!sessionStorage.getItem(SESSION_ITEM)) this.$("developer").hidden = false;
      if (!this._token) {
        this.$("notice").textContent = this.returnedFromCheckout()
          ? "Thank you: your credits appear where you bought them in a few moments. You may close this tab."
          : "Open this page from the site where you use your credits.";
        return;
      }
      this.start();
    }
    returnedFromCheckout() {
      return /\/purchase-(complete|cancelled)$/.test(window.location.pathname) &&
        new URLSearchParams(window.location.search).has("purchase_id");
    }
    async afterCheckout() {
      if (this.mode !== "page" || !this.returnedFromCheckout() || this._checkoutSeen) return;
      this._checkoutSeen = true;
      const params = new URLSearchParams(window.location.search);
      const purchaseId = params.get("purchase_id");
      if (window.location.pathname.endsWith("/purchase-cancelled")) {
        this.$("notice").textContent = "The purchase was cancelled; nothing was charged.";
        return;
      }
      const confirmed = await this.api("/v1/card/purchases/" + encodeURIComponent(purchaseId) + "/confirm", {
        method: "POST", body: JSON.stringify({ session_id: params.get("session_id") }),
      });
      this.$("notice").textContent = "Purchase " + confirmed.purchase.id + ": " +
        (confirmed.purchase.status === "completed" ? "completed" : statusLabel("card", confirmed.purchase.status)) + ".";
    }
    async showSession() {
      if (this.mode !== "page" || !this._token || !this._token.startsWith("crs_")) return;
      const current = await this.api("/v1/session");
      this.linkBack(this.$("back"), current.return_url);
      this.$("session-bar").hidden = false;
    }
    async logout() {
      try {
        await this.api("/v1/session/logout", { method: "POST" });
        this.ended("session_revoked", this.$("back").hidden ? "" : this.$("back").href);
      } catch (error) { this.failed(error, this.$("error")); }
    }

    // --- talking to the API -----------------------------------------------------------------------------------

    async api(path, options = {}) {
      if (!this._token) throw new ApiError(401, "unauthenticated", "Not signed in.");
      let response;
      try {
        response = await fetch(this.apiBase + path, {
          ...options,
          credentials: "omit",
          headers: {
            Authorization: "Bearer " + this._token,
            "Content-Type": "application/json",
            ...(options.headers || {}),
          },
        });
      } catch (_error) {
        throw new ApiError(0, "network", "creditrail cannot be reached; retrying shortly.");
      }
      if (response.status === 204) return {};
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        const error = body.error || {};
        throw new ApiError(response.status, error.code || "http_" + response.status,
          error.message || response.statusText || "The request failed.", error.details);
      }
      return body;
    }

    // Shows an error beside what caused it; a session that ended is the whole component's business.
    failed(error, where) {
      if (error instanceof ApiError && SESSION_ENDED.has(error.code)) {
        this.ended(error.code, error.details.return_url);
        return;
      }
      const target = where || this.$("error");
      target.textContent = error instanceof ApiError ? ERROR_ADVICE[error.code] || error.message
        : String((error && error.message) || error);
    }

    platformOf(returnUrl) {
      try { return new URL(returnUrl).host; } catch (_error) { return ""; }
    }
    linkBack(anchor, returnUrl) {
      let url = null;
      try { url = new URL(returnUrl); } catch (_error) { url = null; }
      if (!url || !/^https?:$/.test(url.protocol)) { anchor.hidden = true; return; }
      anchor.href = url.href;
      anchor.textContent = "Back to " + url.host;
      anchor.hidden = false;
    }
    ended(code, returnUrl) {
      clearTimeout(this._timer);
      this._generation += 1;
      this._token = null;
      if (this.mode === "page") sessionStorage.removeItem(SESSION_ITEM);
      const where = this.platformOf(returnUrl) || "the site that sent you here";
      this.$("ended-message").textContent =
        (code === "session_expired" ? "This link has expired" : "This session has ended") +
        "; open the credits page again from " + where + ".";
      this.linkBack(this.$("ended-back"), returnUrl);
      this.$("ended").hidden = false;
      this.$("account").hidden = true;
      this.$("session-bar").hidden = true;
      this.$("error").textContent = "";
      if (this.badge) {
        this.$("badge-balance").textContent = "Sign in again";
        this.badge.setAttribute("aria-label", "Credits: the session has ended. Open the credits panel");
      }
      this.dispatchEvent(new CustomEvent("creditrail:session-expired", {
        bubbles: true, composed: true, detail: { code, returnUrl: returnUrl || null },
      }));
    }

    // --- loading and polling ----------------------------------------------------------------------------------

    async start() {
      clearTimeout(this._timer);
      const generation = ++this._generation;
      this._balanceSeen = null;
      this.$("ended").hidden = true;
      this.$("error").textContent = "";
      if (!this._token) {
        if (this.badge) this.$("badge-balance").textContent = "…";
        return;
      }
      try {
        await this.showSession();
        await this.afterCheckout();
        await this.loadAll();
        if (generation !== this._generation) return;
        this.$("account").hidden = false;
      } catch (error) {
        this.failed(error, this.$("error"));
      }
      if (generation === this._generation) this.schedule();
    }

    async loadAll() {
      await this.refreshBalance();
      await Promise.all([
        this.loadPacks(), this.transactions.reset(), this.lots.reset(), this.purchases.reset(),
        this.loadUsdc(), this.loadRecharge(), this.loadAlerts(), this.loadBudgets(),
      ]);
    }

    schedule(delay) {
      clearTimeout(this._timer);
      if (!this._token || !this._started) return;
      if (Date.now() - this._lastActive > IDLE_STOP_MS) return; // idle: wait for a key or a click
      const wait = delay !== undefined ? delay
        : document.hidden ? POLL_HIDDEN_MS : this.showing ? POLL_OPEN_MS : POLL_CLOSED_MS;
      const generation = this._generation;
      this._timer = setTimeout(() => this.tick(generation), wait);
    }

    async tick(generation) {
      if (generation !== this._generation) return;
      try {
        const changed = await this.refreshBalance();
        if (this.showing) {
          await Promise.all([this.purchases.refreshHead(), this.transactions.refreshHead(), this.loadDeposits()]);
          if (changed) await Promise.all([this.lots.reset(), this.loadRecharge(), this.loadBudgets()]);
        }
        if (this.$("error").textContent && this.$("error").dataset.transient) this.$("error").textContent = "";
      } catch (error) {
        if (error instanceof ApiError && error.code === "network") {
          this.$("error").textContent = error.message;
          this.$("error").dataset.transient = "1";
        } else {
          this.failed(error, this.$("error"));
        }
      }
      if (generation === this._generation) this.schedule();
    }

    // Whether the balance moved since it was last seen.
    async refreshBalance() {
      const b = await this.api("/v1/balance");
      this.$("available").textContent = fmtCredits(b.available_credits) + " credits";
      this.$("available-usd").textContent = "(" + fmtUsd(b.available_cents) + ")";
      this.$("reserved").textContent = fmtCredits(b.reserved_credits) + " credits";
      this.$("owed").textContent = fmtCredits(b.debt_credits) + " credits";
      this.$("next-expiry").textContent = b.next_expiry_at
        ? fmtCredits(b.next_expiry_credits) + " credits on " + fmtDate(b.next_expiry_at) : "none";
      this.$("expiring-30").textContent = fmtCredits(b.expiring_within_30_days_credits) + " credits";
      if (this.badge) {
        this.$("badge-balance").textContent = fmtCredits(b.available_credits);
        this.badge.setAttribute("aria-label", "Credits: " + fmtCredits(b.available_credits) + " available. Open the credits panel");
      }
      const seen = [b.available_credits, b.reserved_credits, b.debt_credits, b.total_credits].join(",");
      const changed = this._balanceSeen !== null && seen !== this._balanceSeen;
      this._balanceSeen = seen;
      return changed;
    }

    // --- rows ---------------------------------------------------------------------------------------------------

    row(main, sub, amount, extra) {
      return el("li", { class: "row" },
        el("div", { class: "row-main" }, el("span", { class: "row-title", text: main }), el("span", { class: "row-sub muted", text: sub })),
        el("div", { class: "row-amount", text: amount }),
        extra || null);
    }
    transactionRow(t) {
      const sign = t.amount_credits > 0 ? "+" : "";
      const label = KIND_LABELS[t.kind] || "Other";
      const sub = [fmtDateTime(t.created_at), t.description || ""].filter(Boolean).join(" · ");
      return this.row(label, sub, sign + fmtCredits(t.amount_credits));
    }
    lotRow(l) {
      const source = l.promotional ? "Promotion" : RAIL_LABELS[l.rail] || l.rail;
      const sub = fmtCredits(l.remaining_credits) + " left" +
        (l.reserved_credits ? ", " + fmtCredits(l.reserved_credits) + " reserved" : "") +
        " · expires " + fmtDate(l.expires_at);
      return this.row(source + " · " + fmtDate(l.credited_at), sub, fmtCredits(l.credits));
    }
    purchaseRow(p) {
      const paid = p.amount_cents !== null && p.amount_cents !== undefined ? fmtUsd(p.amount_cents)
        : p.amount_usdc_units !== null && p.amount_usdc_units !== undefined ? fmtUsdc(p.amount_usdc_units) : "";
      const sub = [fmtDateTime(p.created_at), paid, statusLabel(p.rail, p.status)].filter(Boolean).join(" · ");
      const receipt = p.receipt_url
        ? el("a", { class: "receipt", href: p.receipt_url, target: "_blank", rel: "noopener noreferrer", text: "Receipt" })
        : null;
      const via = p.details && p.details.via === "x402" ? " via x402" : "";
      return this.row((RAIL_LABELS[p.rail] || p.rail) + " purchase" + via, sub, fmtCredits(p.credits) + " credits", receipt);
    }

    // --- buying -------------------------------------------------------------------------------------------------

    async loadPacks() {
      const packs = await this.api("/v1/card/packs");
      this._custom = packs.custom;
      this._packs = packs.packs;
      this.$("packs").replaceChildren(...packs.packs.map((pack) => el("li", { class: "pack" },
        el("span", { class: "pack-name", text: pack.name }),
        el("span", { class: "pack-detail", text: fmtCredits(pack.amount_credits) + " credits · " + fmtUsd(pack.amount_cents) }),
        el("button", {
          type: "button", class: "buy", "data-pack": pack.code,
          "aria-label": "Buy " + pack.name + ": " + fmtCredits(pack.amount_credits) + " credits for " + fmtUsd(pack.amount_cents),
          text: "Buy", onclick: (event) => this.buy(event.currentTarget, { pack: pack.code }),
        }))));
      const input = this.$("custom-credits");
      input.min = String(packs.custom.min_credits);
      input.max = String(packs.custom.max_credits);
      input.step = String(packs.custom.step_credits);
      if (!input.value) input.value = String(packs.custom.min_credits);
      this.$("custom-form").querySelector("label").firstChild.textContent =
        "Custom amount (" + fmtCredits(packs.custom.min_credits) + " to " + fmtCredits(packs.custom.max_credits) +
        " credits, in steps of " + fmtCredits(packs.custom.step_credits) + ") ";
      const select = this.$("recharge-pack");
      const chosen = select.value;
      select.replaceChildren(...packs.packs.map((pack) => el("option", {
        value: pack.code, text: pack.name + " (" + fmtCredits(pack.amount_credits) + " credits, " + fmtUsd(pack.amount_cents) + ")",
      })));
      if (chosen) select.value = chosen;
    }
    customProblem(text) {
      const c = this._custom;
      if (!c) return "Loading…";
      if (!/^\d+$/.test(text.trim())) return "Type a whole number of credits.";
      const credits = Number(text);
      if (credits < c.min_credits || credits > c.max_credits) {
        return "Choose from " + fmtCredits(c.min_credits) + " to " + fmtCredits(c.max_credits) + " credits.";
      }
      if (credits % c.step_credits !== 0) return "Choose a multiple of " + fmtCredits(c.step_credits) + " credits.";
      return null;
    }
    buyCustom() {
      const text = this.$("custom-credits").value;
      const problem = this.customProblem(text);
      if (problem) {
        this.$("buy-error").textContent = problem;
        this.$("custom-credits").focus();
        return;
      }
      this.buy(this.$("custom-buy"), { amount_credits: Number(text) });
    }
    async buy(button, body) {
      if (button.disabled) return;
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      const errorBox = this.$("buy-error");
      errorBox.textContent = "";
      try {
        const purchase = await this.api("/v1/card/purchases", {
          method: "POST",
          headers: { "Idempotency-Key": "ui-" + crypto.randomUUID() },
          body: JSON.stringify({ ...body, save_card: this.$("save-card").checked }),
        });
        if (!purchase.checkout_url) throw new ApiError(0, "no_checkout", "The checkout could not be opened; try again.");
        if (this.mode === "page") {
          window.location.assign(purchase.checkout_url);
          return; // leaving: the button stays disabled
        }
        // On a platform's page: pay in a new tab, this panel shows the credits when they land.
        const opened = window.open(purchase.checkout_url, "_blank");
        if (opened) opened.opener = null;
        else window.location.assign(purchase.checkout_url);
        this.$("notice").textContent = "Checkout opened in a new tab; your credits appear here once paid.";
        this.schedule(0);
      } catch (error) {
        this.failed(error, errorBox);
      }
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }

    // --- USDC -------------------------------------------------------------------------------------------------

    async loadUsdc() {
      const box = this.$("usdc");
      const chains = await this.api("/v1/usdc/chains");
      if (!chains.data.length) {
        box.replaceChildren(el("p", { class: "muted", text: "USDC deposits are not enabled here." }));
        this._chains = [];
        return;
      }
      if (this._chains.length && this._chains.map((c) => c.chain_id).join() === chains.data.map((c) => c.chain_id).join()) {
        return this.loadDeposits(); // already drawn; the amounts typed stay
      }
      this._chains = chains.data;
      const blocks = [];
      for (const chain of chains.data) blocks.push(await this.chainBlock(chain));
      box.replaceChildren(...blocks);
      await this.loadDeposits();
    }
    async chainBlock(chain) {
      const id = chain.chain_id;
      const address = await this.api("/v1/usdc/deposit-address?chain_id=" + id);
      const code = el("code", { class: "address", id: "address-" + id, text: address.address });
      const copyStatus = el("span", { class: "muted", role: "status" });
      const copy = el("button", {
        type: "button", class: "copy", id: "copy-" + id, "aria-label": "Copy the deposit address on " + address.chain_name,
        text: "Copy address", onclick: () => this.copy(address.address, copyStatus, code),
      });
      const amount = el("input", {
        id: "amount-" + id, type: "text", inputmode: "decimal", autocomplete: "off", placeholder: "e.g. 25",
        "aria-describedby": "amount-error-" + id,
      });
      const amountError = el("span", { class: "error", id: "amount-error-" + id, role: "alert" });
      const link = el("a", { class: "pay-link", id: "pay-link-" + id, text: "Open in a wallet" });
      const qr = el("div", { class: "qr", id: "qr-" + id });
      const update = (view) => {
        link.href = view.payment_uri;
        this.drawQr(qr, view.qr_svg);
      };
      update(address);
      let debounce = null;
      amount.addEventListener("input", () => {
        clearTimeout(debounce);
        debounce = setTimeout(async () => {
          amountError.textContent = "";
          const text = amount.value.trim();
          const units = text === "" ? "0" : usdcUnitsOf(text);
          if (units === null) { amountError.textContent = "Type an amount in USDC, such as 25 or 12.50."; return; }
          try {
            update(await this.api("/v1/usdc/deposit-address?chain_id=" + id + "&amount_usdc_units=" + units));
          } catch (error) {
            if (error instanceof ApiError && error.code === "amount_out_of_bounds") {
              amountError.textContent = "Send from " + fmtUsdc(error.details.min_usdc_units) + " to " +
                fmtUsdc(error.details.max_usdc_units) + " at once.";
            } else {
              this.failed(error, amountError);
            }
          }
        }, AMOUNT_DEBOUNCE_MS);
      });
      const rule = "Credited at 100 credits per USDC after " +
        (address.use_finalized ? "the block is final" : address.confirmations + " confirmations") +
        "; minimum " + fmtUsdc(address.min_deposit_usdc_units) +
        (address.carry_usdc_units ? "; " + fmtUsdc(address.carry_usdc_units) + " carried to your next deposit" : "") + ".";
      return el("article", { class: "chain", "aria-labelledby": "chain-" + id },
        el("h4", { id: "chain-" + id, text: address.chain_name }),
        el("p", { text: "Send USDC on " + address.chain_name + " (only USDC, only this network) to:" }),
        el("div", { class: "address-line" }, code, copy, copyStatus),
        el("div", { class: "pay" },
          el("div", { class: "pay-form" },
            el("label", { for: "amount-" + id, text: "Amount (USDC, optional)" }), amount, amountError, link),
          qr),
        el("p", { class: "muted", text: rule }));
    }
    drawQr(box, svgText) {
      const parsed = new DOMParser().parseFromString(svgText, "image/svg+xml");
      const svg = parsed.documentElement;
      if (svg.nodeName !== "svg") { box.replaceChildren(); return; }
      svg.setAttribute("role", "img");
      box.replaceChildren(document.importNode(svg, true));
    }
    async copy(text, status, code) {
      status.textContent = "";
      try {
        await navigator.clipboard.writeText(text);
        status.textContent = "Copied";
      } catch (_error) {
        const range = document.createRange();
        range.selectNodeContents(code);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        status.textContent = "Selected: press Ctrl+C (⌘C) to copy";
      }
    }
    async loadDeposits() {
      if (!this._chains.length) return;
      const page = await this.api("/v1/usdc/deposits?limit=" + PAGE_SIZE);
      const names = Object.fromEntries(this._chains.map((c) => [c.chain_id, c.name]));
      const pending = page.data.filter((d) => d.status === "observed" || d.status === "confirmed");
      const box = this.$("pending-deposits");
      if (!pending.length) { box.replaceChildren(); return; }
      box.replaceChildren(el("h4", { text: "Deposits on their way" }), el("ul", { class: "rows", id: "pending" },
        ...pending.map((d) => {
          const left = Math.max(0, d.confirmations_required - d.confirmations);
          const sub = (names[d.chain_id] || "chain " + d.chain_id) + " · " + d.confirmations + " of " +
            d.confirmations_required + " confirmations" + (left ? ", " + left + " to go" : ", crediting");
          return this.row(d.via === "x402" ? "USDC deposit via x402" : "USDC deposit", sub, fmtUsdc(d.amount_usdc_units));
        })));
    }

    // --- auto-recharge ------------------------------------------------------------------------------------------

    async loadRecharge() {
      const r = await this.api("/v1/card/auto-recharge");
      this.$("recharge-state").textContent = r.enabled
        ? "On: when the balance falls below " + fmtCredits(r.threshold_credits) + " credits, buy " +
          fmtCredits(r.amount_credits) + " credits for " + fmtUsd(r.amount_cents) + "."
        : "Off" + (r.disabled_reason ? " (" + r.disabled_reason + ")" : "") + ".";
      this.$("recharge-card").textContent = r.has_saved_card
        ? "A card is saved for it."
        : "No card saved yet: tick “Save my card for auto-recharge” on your next card purchase.";
      this.$("recharge-failure").textContent = r.last_failure_at
        ? "Last attempt failed on " + fmtDateTime(r.last_failure_at) + ": " + (r.last_failure_message || r.last_failure_code) : "";
      const form = this.$("recharge-form");
      if (!form.contains(this.root.activeElement)) {
        this.$("recharge-enabled").checked = r.enabled;
        this.$("recharge-threshold").value = String(r.threshold_credits);
        this.$("recharge-pack").value = r.pack;
      }
    }
    async saveRecharge() {
      const button = this.$("recharge-save");
      const errorBox = this.$("recharge-error");
      errorBox.textContent = "";
      const threshold = this.$("recharge-threshold").value.trim();
      if (!/^\d+$/.test(threshold)) {
        errorBox.textContent = "Type the threshold as a whole number of credits.";
        this.$("recharge-threshold").focus();
        return;
      }
      button.disabled = true;
      try {
        await this.api("/v1/card/auto-recharge", {
          method: "PUT",
          body: JSON.stringify({
            enabled: this.$("recharge-enabled").checked, threshold_credits: Number(threshold),
            pack: this.$("recharge-pack").value,
          }),
        });
        errorBox.textContent = "";
        button.focus();
        await this.loadRecharge();
      } catch (error) {
        this.failed(error, errorBox);
      }
      button.disabled = false;
    }

    // --- alerts and budgets -------------------------------------------------------------------------------------

    async loadAlerts() {
      let alerts;
      try {
        alerts = await this.api("/v1/account/alerts");
      } catch (error) {
        if (error instanceof ApiError && (error.status === 404 || error.status === 405)) {
          this.$("alerts-form").hidden = true; // this server has no alerts yet
          return;
        }
        throw error;
      }
      this.showAlerts(alerts);
      this.$("alerts-form").hidden = false;
    }
    showAlerts(alerts) {
      if (!this.$("alerts-form").contains(this.root.activeElement)) {
        const threshold = alerts.low_balance_threshold_credits;
        this.$("alert-threshold").value = threshold === null || threshold === undefined ? "" : String(threshold);
        this.$("alert-email").checked = Boolean(alerts.email_enabled);
      }
      // "armed" says, per kind of alert, whether the next crossing is told.
      const armed = Boolean(alerts.armed && alerts.armed.low_balance);
      this.$("alert-state").textContent = alerts.low_balance_threshold_credits === null
        ? "No low-balance alert."
        : armed
          ? "Armed: you are told once when the balance falls below it."
          : "Sent; armed again once the balance is comfortably back above it.";
    }
    async saveAlerts() {
      const errorBox = this.$("alerts-error");
      errorBox.textContent = "";
      const text = this.$("alert-threshold").value.trim();
      if (text !== "" && !/^\d+$/.test(text)) {
        errorBox.textContent = "Type the threshold as a whole number of credits, or leave it empty for no alert.";
        this.$("alert-threshold").focus();
        return;
      }
      const button = this.$("alerts-save");
      button.disabled = true;
      try {
        this.showAlerts(await this.api("/v1/account/alerts", {
          method: "PATCH",
          body: JSON.stringify({
            low_balance_threshold_credits: text === "" ? null : Number(text), email_enabled: this.$("alert-email").checked,
          }),
        }));
      } catch (error) {
        this.failed(error, errorBox);
      }
      button.disabled = false;
    }

    async loadBudgets() {
      const page = await this.api("/v1/budgets?limit=200");
      // The account-wide monthly limit is one budget (scope "account", period "month"); the others are listed.
      const monthly = page.data.find((b) => b.scope === "account" && b.period === "month") || null;
      this._monthly = monthly;
      if (!this.$("monthly-form").contains(this.root.activeElement)) {
        this.$("monthly-limit").value = monthly ? String(monthly.limit_credits) : "";
      }
      this.$("monthly-state").textContent = monthly
        ? fmtCredits(monthly.used_credits) + " of " + fmtCredits(monthly.limit_credits) + " credits used this month."
        : "No monthly limit: your programs may spend the whole balance.";
      const others = page.data.filter((b) => b !== monthly);
      const list = this.$("budgets");
      if (list.contains(this.root.activeElement)) return; // someone is editing one
      list.replaceChildren(...others.map((b) => this.budgetRow(b)));
    }
    async saveMonthly() {
      const errorBox = this.$("monthly-error");
      errorBox.textContent = "";
      const text = this.$("monthly-limit").value.trim();
      if (text !== "" && !/^\d+$/.test(text)) {
        errorBox.textContent = "Type the limit as a whole number of credits, or leave it empty for no limit.";
        this.$("monthly-limit").focus();
        return;
      }
      const button = this.$("monthly-save");
      button.disabled = true;
      try {
        const current = this._monthly;
        if (current && text === "") {
          await this.api("/v1/budgets/" + current.id, { method: "DELETE" });
        } else if (current) {
          await this.api("/v1/budgets/" + current.id, { method: "PATCH", body: JSON.stringify({ limit_credits: Number(text) }) });
        } else if (text !== "") {
          await this.api("/v1/budgets", {
            method: "POST",
            body: JSON.stringify({ name: "Monthly limit", scope: "account", period: "month", limit_credits: Number(text) }),
          });
        }
        button.disabled = false;
        button.focus();
        await this.loadBudgets();
      } catch (error) {
        this.failed(error, errorBox);
      }
      button.disabled = false;
    }
    budgetRow(b) {
      const scope = b.scope === "project" ? "project " + b.scope_ref
        : b.scope === "account" ? "the whole account" : "API key #" + b.scope_ref;
      const period = b.period === "total" ? "in total" : "per " + b.period;
      const input = el("input", {
        type: "number", min: "0", inputmode: "numeric", id: "budget-limit-" + b.id, value: String(b.limit_credits),
      });
      const errorBox = el("span", { class: "error", role: "alert" });
      const save = el("button", { type: "submit", text: "Save limit" });
      const form = el("form", { class: "inline-form", novalidate: true },
        el("label", { for: "budget-limit-" + b.id, text: "Limit (credits) " }), input, save, errorBox);
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        errorBox.textContent = "";
        if (!/^\d+$/.test(input.value.trim())) { errorBox.textContent = "Type a whole number of credits."; return; }
        save.disabled = true;
        try {
          await this.api("/v1/budgets/" + b.id, { method: "PATCH", body: JSON.stringify({ limit_credits: Number(input.value.trim()) }) });
          errorBox.textContent = "";
          save.focus();
        } catch (error) {
          this.failed(error, errorBox);
        }
        save.disabled = false;
      });
      return this.row(b.name + " (" + scope + ")",
        fmtCredits(b.used_credits) + " of " + fmtCredits(b.limit_credits) + " credits used " + period, "", form);
    }
  }

  if (!customElements.get("creditrail-credits")) customElements.define("creditrail-credits", CreditrailCredits);
})();
