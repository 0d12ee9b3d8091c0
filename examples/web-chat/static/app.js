// im-engine web chat: the page around the JavaScript client module
// (/im-client.mjs, from clients/js), which owns the WebSocket, reconnects,
// catches up, resends and delivers each message once, in order. This file is
// only the UI: it renders the client's events and asks it for pages of history.
// The open conversation is a `Timeline` (/im-timeline.mjs), which applies
// recalls and edits to the messages they change; typing is shown with a
// `TypingIndicator` (/im-typing.mjs). The open direct chat's peer shows as
// "online" / "last seen …" (the client's `presence` events, /im-presence.mjs);
// group membership changes are notices (/im-system.mjs).
import {
  ContentType,
  EventKind,
  ImClient,
  Kind,
  State,
  Timeline,
  TypingIndicator,
  convKey as key,
  isSystem,
  loadSchema,
  num,
  presenceText,
  presenceTextChangesIn,
  systemText,
  typingText,
} from "/im-client.mjs";

{
  const PAGE = 30; // messages per history page
  const $ = (id) => document.getElementById(id);

  let schema = null; // protobuf types, once /im.proto is loaded
  const state = {
    me: null,
    client: null,
    conversations: new Map(), // key -> ConversationSummary (plain object)
    open: null, // {key, ref, timeline: Timeline, oldest, newest, hasMore}; oldest/newest count event messages too
    listTimer: null,
    editing: null, // seq of the own message being edited in the compose box, or null
    typing: new TypingIndicator(),
    typingTimer: null,
    peerRead: new Map(), // direct conversation key -> the peer's read seq (list, then live receipts)
    presence: new Map(), // user -> {online, last_seen_ms} of watched users, while connected
    presenceTimer: null,
  };

  const text = new TextDecoder("utf-8", { fatal: false });

  async function loadSchemaOnce() {
    if (!schema) schema = loadSchema(globalThis.protobuf, await (await fetch("/im.proto")).text());
    return schema;
  }

  /** The running client; requests made while it is offline fail with "offline". */
  const client = () => state.client;

  /** Starts a client for `user` and wires its events to the page. */
  async function connect(user) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const c = new ImClient({
      urls: [`${scheme}://${location.host}/ws`],
      token: user,
      schema: await loadSchemaOnce(),
      clientInfo: "im-engine web-chat",
      // The page shows history on demand (newest page, scroll back), so the
      // client delivers what arrives from now on, gap-free.
      fromStart: false,
      // Typing and read receipts are shown: ask for them.
      typingEvents: true,
      receiptEvents: true,
    });
    state.client = c;
    let online = false;
    c.on("message", (m) => onMessages([m]));
    c.on("kicked", (k) => showError(`kicked: ${k.reasonName} ${k.detail}`));
    c.on("historygap", (g) => showError(`messages ${g.from}-${g.to} of ${g.conversation.id} are no longer kept`));
    c.on("typing", onTyping);
    c.on("readreceipt", onReadReceipt);
    c.on("presence", onPresence);
    c.on("instruction", (i) => showNotice(`instruction from the server: ${i.kind}`));
    c.on("state", ({ state: s, reason }) => {
      if (state.client !== c) return;
      if (s === State.ONLINE) {
        setStatus("online", "online");
        // Back after a reconnect: unread counts may have moved meanwhile.
        if (online) scheduleList();
        online = true;
      } else if (s === State.CLOSED) {
        setStatus("offline", reason);
      } else {
        setStatus(s === State.OFFLINE ? "offline" : "connecting", `${s}: ${reason}`);
      }
      if (s === State.OFFLINE || s === State.CLOSED) {
        // Not known while disconnected; the client renews the watch on reconnect.
        state.presence.clear();
        renderPresence();
      }
      $("reconnect").hidden = !state.me || s === State.ONLINE || s === State.CATCHING_UP;
    });
    return c.start();
  }

  // ------------------------------------------------------------ conversations

  function scheduleList() {
    clearTimeout(state.listTimer);
    state.listTimer = setTimeout(refreshList, 150);
  }

  async function refreshList() {
    try {
      const value = await client().listConversations(200);
      state.conversations.clear();
      for (const c of value.conversations) {
        const k = key(c.conversation);
        state.conversations.set(k, c);
        // The peer's read cursor as the server keeps it: "seen" survives a reload.
        const peerRead = num(c.peer_read_seq);
        if (peerRead > (state.peerRead.get(k) || 0)) state.peerRead.set(k, peerRead);
      }
      renderList();
      renderSeen();
    } catch (e) {
      showError(`could not list conversations: ${e.message}`);
    }
  }

  function title(ref) {
    return ref.kind === Kind.GROUP ? `#${ref.id}` : ref.kind === Kind.ROOM ? `~${ref.id}` : ref.id;
  }

  function renderList() {
    const list = $("conversations");
    list.textContent = "";
    const items = [...state.conversations.values()].sort(
      (a, b) => num(b.last_message && b.last_message.server_time_ms) - num(a.last_message && a.last_message.server_time_ms),
    );
    for (const c of items) {
      const k = key(c.conversation);
      const li = document.createElement("li");
      li.dataset.conv = k;
      li.dataset.testid = "conversation";
      if (state.open && state.open.key === k) li.classList.add("open");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = title(c.conversation);
      const badge = document.createElement("span");
      badge.className = "badge";
      const unread = num(c.unread);
      badge.textContent = c.unread_more ? "99+" : String(unread);
      badge.hidden = !c.unread_more && unread === 0;
      const last = document.createElement("span");
      last.className = "last";
      if (c.last_message) {
        // A notice names who acted itself.
        const who = isSystem(c.last_message) ? "" : `${c.last_message.sender_user}: `;
        last.textContent = `${who}${summary(c.last_message)}`;
      }
      li.append(name, badge, last);
      li.onclick = () => openConversation({ kind: c.conversation.kind, id: c.conversation.id });
      list.append(li);
    }
  }

  async function openConversation(ref) {
    const k = key(ref);
    if (state.open) client().stopTyping(state.open.ref);
    watchPeer(ref, state.open?.ref);
    if (state.editing !== null) $("compose-text").value = ""; // an edit does not follow to another chat
    stopEditing();
    state.open = { key: k, ref, timeline: new Timeline(), oldest: 0, newest: 0, hasMore: false };
    $("conversation-title").textContent = title(ref);
    $("message-list").textContent = "";
    $("compose").hidden = false;
    $("chat-error").textContent = "";
    renderList();
    renderTyping();
    renderPresence();
    try {
      const value = await client().pull(ref, { limit: PAGE, newest: true });
      if (!state.open || state.open.key !== k) return;
      addMessages(value.messages, { scroll: "bottom" });
      state.open.hasMore = value.has_more;
      renderHistoryEdge(value);
      markRead();
    } catch (e) {
      // A direct chat with no messages yet is not an error worth showing.
      if (!/NOT_FOUND/.test(e.message)) showError(e.message);
      renderHistoryEdge({ has_more: false });
    }
    $("compose-text").focus();
  }

  async function loadOlder() {
    const open = state.open;
    if (!open || !open.hasMore || open.oldest <= 1 || open.loading) return;
    open.loading = true;
    try {
      const value = await client().pull(open.ref, { until_seq: open.oldest - 1, limit: PAGE, newest: true });
      if (state.open !== open) return;
      open.hasMore = value.has_more;
      addMessages(value.messages, { scroll: "keep" });
      renderHistoryEdge(value);
    } catch (e) {
      showError(e.message);
    } finally {
      open.loading = false;
    }
  }

  function renderHistoryEdge(pull) {
    const open = state.open;
    const more = open && open.hasMore && open.oldest > 1;
    $("load-older").hidden = !more;
    $("history-start").hidden = more || !open;
    if (pull && num(pull.history_start_seq) > 0) {
      $("history-start").textContent = `History before message ${num(pull.history_start_seq)} is no longer kept`;
    }
  }

  /**
   * Adds messages of the open conversation (event messages included: the
   * timeline applies them to their targets), rendering new ones in seq
   * order and changed ones in place.
   */
  function addMessages(messages, { scroll }) {
    const open = state.open;
    const box = $("messages");
    const fromBottom = box.scrollHeight - box.scrollTop;
    const atBottom = fromBottom - box.clientHeight < 40;
    for (const m of messages) {
      const seq = num(m.seq);
      open.oldest = open.oldest ? Math.min(open.oldest, seq) : seq;
      open.newest = Math.max(open.newest, seq);
    }
    const { added, changed } = open.timeline.add(messages);
    const list = $("message-list");
    for (const seq of added) {
      const li = renderMessage(open.timeline.get(seq));
      // Insert before the first rendered message with a higher seq.
      const after = [...list.children].find((el) => num(el.dataset.seq) > seq);
      list.insertBefore(li, after || null);
    }
    for (const seq of changed) {
      const old = messageItem(seq);
      if (old) old.replaceWith(renderMessage(open.timeline.get(seq)));
      if (state.editing === seq && open.timeline.get(seq).recalled) stopEditing();
    }
    renderSeen();
    if (scroll === "keep") box.scrollTop = box.scrollHeight - fromBottom;
    else if (scroll === "bottom" || atBottom) box.scrollTop = box.scrollHeight;
  }

  const messageItem = (seq) => $("message-list").querySelector(`li[data-seq="${seq}"]`);

  /** A message as the page shows it: from a `Timeline` (recalls and edits applied). */
  function renderMessage(m) {
    const li = document.createElement("li");
    li.dataset.seq = String(m.seq);
    if (isSystem(m)) return renderNotice(li, m);
    li.dataset.testid = "message";
    const mine = m.sender_user === state.me;
    if (mine) li.classList.add("mine");
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = m.sender_user;
    const body = document.createElement("span");
    body.className = "text";
    const time = document.createElement("time");
    const at = new Date(m.server_time_ms);
    time.dateTime = at.toISOString();
    time.textContent = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    li.append(who, body);
    if (m.recalled) {
      li.classList.add("recalled");
      body.textContent = "message recalled";
    } else {
      body.textContent = content(m);
      if (m.edit_count > 0) {
        const edited = document.createElement("span");
        edited.className = "edited";
        edited.textContent = "(edited)";
        li.append(edited);
      }
    }
    li.append(time);
    if (mine && !m.recalled) {
      const actions = document.createElement("span");
      actions.className = "actions";
      actions.append(action("Edit", "edit", () => startEditing(m.seq)), action("Recall", "recall", () => recall(m.seq)));
      li.append(actions);
    }
    return li;
  }

  /** A system event (a group membership change): a notice, no sender, no actions. */
  function renderNotice(li, m) {
    li.dataset.testid = "system";
    li.classList.add("system");
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = m.recalled ? "notice removed" : systemText(m.system, text.decode(m.body));
    li.append(body);
    return li;
  }

  function action(label, name, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = name;
    b.textContent = label;
    b.onclick = onClick;
    return b;
  }

  /** A body as text, with its content type when it is not text. */
  function content(m) {
    const body = text.decode(m.body);
    switch (m.content_type) {
      case ContentType.IMAGE_REF:
        return `[image] ${body}`;
      case ContentType.FILE_REF:
        return `[file] ${body}`;
      case ContentType.CUSTOM:
        return `[${m.custom_content_type || "custom"}] ${body}`;
      default:
        return body;
    }
  }

  /** One line for the conversation list (a decoded `Message`, event messages too). */
  function summary(m) {
    const kind = m.event ? num(m.event.kind) : 0;
    if (kind === EventKind.RECALL) return "recalled a message";
    if (kind === EventKind.EDIT) return `edited: ${content(m)}`;
    if (m.recalled) return "message recalled";
    if (isSystem(m)) return systemText(m.system, text.decode(m.body));
    return content(m);
  }

  function onMessages(messages) {
    for (const m of messages) {
      noteLast(m);
      // A message from someone ends their typing there.
      if (state.typing.users(key(m.conversation), Date.now()).includes(m.sender_user)) {
        state.typing.clear(key(m.conversation), m.sender_user);
        renderTyping();
      }
    }
    const open = state.open;
    const mine = open ? messages.filter((m) => key(m.conversation) === open.key) : [];
    if (mine.length) {
      // A new direct chat has its first message: its peer can be watched now.
      watchPeer(open.ref);
      addMessages(mine, {});
      if (document.visibilityState === "visible") markRead();
    }
    scheduleList();
  }

  // ------------------------------------------------------------ recall and edit

  async function recall(seq) {
    const open = state.open;
    if (!open) return;
    try {
      // The page changes when the recall's event message arrives.
      await client().recall(open.ref, seq);
    } catch (e) {
      showError(`not recalled: ${e.message}`);
    }
  }

  /** Puts an own message's text in the compose box; the next submit edits it. */
  function startEditing(seq) {
    const m = state.open?.timeline.get(seq);
    if (!m || m.recalled) return;
    state.editing = seq;
    $("editing").hidden = false;
    $("compose-text").value = text.decode(m.body);
    $("compose-text").focus();
    $("send-button").textContent = "Save";
  }

  function stopEditing() {
    state.editing = null;
    $("editing").hidden = true;
    $("send-button").textContent = "Send";
  }

  async function saveEdit(seq, body) {
    const open = state.open;
    try {
      await client().edit(open.ref, seq, body);
    } catch (e) {
      showError(`not edited: ${e.message}`);
    }
  }

  // ------------------------------------------------------------ typing, receipts, presence

  function onTyping(t) {
    state.typing.note(key(t.conversation), t.user_id, t.active, Date.now());
    renderTyping();
  }

  /** "alice is typing…" under the open conversation, until it expires. */
  function renderTyping() {
    const now = Date.now();
    const users = state.open ? state.typing.users(state.open.key, now) : [];
    $("typing").textContent = typingText(users);
    clearTimeout(state.typingTimer);
    const next = state.typing.nextExpiry(now);
    if (next !== null) state.typingTimer = setTimeout(renderTyping, next + 50);
  }

  function onReadReceipt(r) {
    const k = key(r.conversation);
    if (r.user_id === state.me) {
      // Read on another device of mine: the unread counts moved.
      scheduleList();
      return;
    }
    if (r.conversation.kind !== Kind.DIRECT) return;
    state.peerRead.set(k, Math.max(state.peerRead.get(k) || 0, num(r.read_seq)));
    if (state.open?.key === k) renderSeen();
  }

  /** "seen" under my newest message the peer of this direct chat has read. */
  function renderSeen() {
    for (const el of $("message-list").querySelectorAll(".seen")) el.remove();
    const open = state.open;
    if (!open || open.ref.kind !== Kind.DIRECT) return;
    const read = state.peerRead.get(open.key) || 0;
    const last = open.timeline
      .list()
      .reverse()
      .find((m) => m.sender_user === state.me && m.seq <= read && !m.recalled && !isSystem(m));
    if (!last) return;
    const seen = document.createElement("span");
    seen.className = "seen";
    seen.textContent = "seen";
    messageItem(last.seq)?.append(seen);
  }

  /**
   * Watches the peer of direct chat `ref` (and stops watching the one of
   * `previous`). The server refuses users one shares no chat with yet: a new
   * direct chat's peer is watched again once the first message is there.
   */
  function watchPeer(ref, previous) {
    const c = client();
    if (previous?.kind === Kind.DIRECT && previous.id !== ref?.id && c.watching(previous.id)) {
      c.watchPresence([previous.id], false).catch(() => {}); // a stale watch only costs a frame now and then
      state.presence.delete(previous.id);
    }
    if (ref?.kind !== Kind.DIRECT || c.watching(ref.id)) return;
    c.watchPresence([ref.id]).catch((e) => showError(`presence: ${e.message}`));
  }

  function onPresence(p) {
    state.presence.set(p.user_id, p);
    if (state.open?.ref.kind === Kind.DIRECT && state.open.ref.id === p.user_id) renderPresence();
  }

  /** "online" / "last seen …" next to the open direct chat's title. */
  function renderPresence() {
    clearTimeout(state.presenceTimer);
    const el = $("presence");
    const ref = state.open?.ref;
    const p = ref?.kind === Kind.DIRECT ? state.presence.get(ref.id) : undefined;
    el.hidden = !p;
    el.textContent = p ? presenceText(p, Date.now()) : "";
    el.dataset.state = p ? (p.online ? "online" : "offline") : "";
    // "last seen 3 min ago" moves on by itself.
    const next = p ? presenceTextChangesIn(p, Date.now()) : null;
    if (next !== null) state.presenceTimer = setTimeout(renderPresence, next + 50);
  }

  // Read cursors to report, per conversation: debounced, and kept per
  // conversation so switching quickly loses none.
  const pendingReads = new Map(); // key -> {ref, seq}
  let readTimer = null;
  function markRead() {
    const open = state.open;
    if (!open || !open.newest) return;
    const prev = pendingReads.get(open.key);
    if (!prev || prev.seq < open.newest) pendingReads.set(open.key, { ref: open.ref, seq: open.newest });
    clearTimeout(readTimer);
    readTimer = setTimeout(flushReads, 100);
  }

  async function flushReads() {
    const reads = [...pendingReads.entries()];
    pendingReads.clear();
    for (const [k, { ref, seq }] of reads) {
      try {
        const value = await client().read(ref, seq);
        const c = state.conversations.get(k);
        if (c) {
          c.unread = value.unread;
          c.unread_more = value.unread_more;
          c.read_seq = value.read_seq;
          renderList();
        }
      } catch (e) {
        showError(e.message);
      }
    }
  }

  /** Shows a conversation's newest message in the list at once. */
  function noteLast(m) {
    const c = state.conversations.get(key(m.conversation));
    if (c && (!c.last_message || num(c.last_message.seq) < num(m.seq))) {
      c.last_message = m;
      c.head_seq = m.seq;
      renderList();
    }
  }

  /** Sends (the client ends the typing signal); the message shows up through the client's `message` event once committed. */
  async function send(body) {
    const open = state.open;
    if (!open) return;
    try {
      await client().send(open.ref, body);
      scheduleList();
    } catch (e) {
      showError(`not sent: ${e.message}`);
    }
  }

  // ------------------------------------------------------------ UI

  function setStatus(s, detail) {
    $("status").dataset.state = s;
    $("status").textContent = detail || s;
  }

  function showError(message) {
    $("chat-error").textContent = message;
  }

  function showNotice(message) {
    $("notice").textContent = message;
  }

  $("login").addEventListener("submit", async (e) => {
    e.preventDefault();
    const user = $("login-user").value.trim();
    $("login-error").textContent = "";
    $("login-button").disabled = true;
    try {
      const connected = await connect(user);
      state.me = connected.user_id;
      $("me").textContent = `logged in as ${state.me}`;
      $("login").hidden = true;
      $("chat").hidden = false;
      await refreshList();
    } catch (err) {
      state.client?.close();
      state.client = null;
      $("login-error").textContent = err.message;
    } finally {
      $("login-button").disabled = false;
    }
  });

  // The client reconnects by itself (with backoff); this button skips the
  // wait, or starts a new session after a final kick (replaced, removed).
  $("reconnect").addEventListener("click", async () => {
    const c = client();
    if (c && c.state !== State.CLOSED) {
      c.reconnect();
      return;
    }
    $("reconnect").hidden = true;
    try {
      await connect(state.me);
      await refreshList();
    } catch (err) {
      showError(`reconnect failed: ${err.message}`);
      $("reconnect").hidden = false;
    }
  });

  $("new-chat").addEventListener("submit", (e) => {
    e.preventDefault();
    const user = $("new-chat-user").value.trim();
    if (!user) return;
    $("new-chat-user").value = "";
    openConversation({ kind: Kind.DIRECT, id: user });
  });

  $("compose").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("compose-text");
    const body = input.value;
    if (!body.trim()) return;
    input.value = "";
    const editing = state.editing;
    stopEditing();
    if (editing !== null) {
      client().stopTyping(state.open.ref);
      saveEdit(editing, body);
    } else {
      send(body);
    }
  });
  $("compose-text").addEventListener("input", () => {
    if (state.open && client()) client().typing(state.open.ref, $("compose-text").value.trim() !== "");
  });
  $("cancel-edit").addEventListener("click", () => {
    stopEditing();
    $("compose-text").value = "";
    if (state.open) client().stopTyping(state.open.ref);
  });

  $("load-older").addEventListener("click", loadOlder);
  $("messages").addEventListener("scroll", () => {
    if ($("messages").scrollTop < 30) loadOlder();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") markRead();
  });
}
