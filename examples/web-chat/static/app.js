// im-engine web chat: binary protobuf frames (subprotocol im.v1.proto) over
// WebSocket, encoded with protobuf.js from the server's own /im.proto.
"use strict";

(() => {
  const SUBPROTOCOL = "im.v1.proto";
  const PAGE = 30; // messages per history page
  const $ = (id) => document.getElementById(id);

  let T = null; // protobuf types, once /im.proto is loaded
  const state = {
    me: null,
    ws: null,
    nextRequest: 1,
    pending: new Map(), // request_id -> {resolve, reject}
    conversations: new Map(), // key -> ConversationSummary (plain object)
    open: null, // {key, ref, messages: Map(seq -> msg), oldest, newest, hasMore}
    heartbeat: null,
    listTimer: null,
  };

  const key = (ref) => `${ref.kind}:${ref.id}`;
  const num = (v) => (v == null ? 0 : Number(v));
  const utf8 = new TextEncoder();
  const text = new TextDecoder("utf-8", { fatal: false });

  async function loadSchema() {
    const source = await (await fetch("/im.proto")).text();
    const root = protobuf.parse(source, { keepCase: true }).root;
    const kinds = root.lookupEnum("im.v1.ConversationKind").values;
    T = {
      ClientFrame: root.lookupType("im.v1.ClientFrame"),
      ServerFrame: root.lookupType("im.v1.ServerFrame"),
      DIRECT: kinds.CONVERSATION_KIND_DIRECT,
      GROUP: kinds.CONVERSATION_KIND_GROUP,
      ROOM: kinds.CONVERSATION_KIND_ROOM,
      WEB: root.lookupEnum("im.v1.DeviceKind").values.DEVICE_KIND_WEB,
      ErrorCode: root.lookupEnum("im.v1.ErrorCode").valuesById,
      KickReason: root.lookupEnum("im.v1.KickReason").valuesById,
    };
  }

  // ------------------------------------------------------------ transport

  function sendFrame(body, payload, requestId = 0) {
    const frame = T.ClientFrame.create({ request_id: requestId, [body]: payload });
    state.ws.send(T.ClientFrame.encode(frame).finish());
  }

  /** Sends a request and resolves with the answer's body, rejects on Error. */
  function request(body, payload) {
    const id = state.nextRequest++;
    return new Promise((resolve, reject) => {
      state.pending.set(id, { resolve, reject });
      try {
        sendFrame(body, payload, id);
      } catch (e) {
        state.pending.delete(id);
        reject(e);
      }
    });
  }

  function onFrame(event) {
    let frame;
    try {
      frame = T.ServerFrame.decode(new Uint8Array(event.data));
    } catch (e) {
      console.error("undecodable frame", e);
      return;
    }
    const body = frame.body; // name of the oneof field that is set
    const value = body ? frame[body] : null;
    const id = num(frame.request_id);
    if (id && state.pending.has(id)) {
      const { resolve, reject } = state.pending.get(id);
      state.pending.delete(id);
      if (body === "error") {
        reject(new Error(`${T.ErrorCode[value.code] || value.code}: ${value.reason}`));
      } else {
        resolve({ body, value });
      }
      return;
    }
    switch (body) {
      case "push":
        onMessages(value.messages);
        break;
      case "notify":
        onNotify(value);
        break;
      case "kicked":
        setStatus("offline", `kicked: ${T.KickReason[value.reason] || value.reason} ${value.detail}`);
        break;
      case "error":
        showError(`${T.ErrorCode[value.code] || value.code}: ${value.reason}`);
        break;
      default:
        break;
    }
  }

  function connect(user) {
    return new Promise((resolve, reject) => {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const ws = new WebSocket(`${scheme}://${location.host}/ws`, SUBPROTOCOL);
      ws.binaryType = "arraybuffer";
      state.ws = ws;
      let connected = false;
      ws.onmessage = onFrame;
      ws.onclose = (e) => {
        for (const { reject: r } of state.pending.values()) r(new Error("connection closed"));
        state.pending.clear();
        clearInterval(state.heartbeat);
        const why = `disconnected (${e.code}${e.reason ? ": " + e.reason : ""})`;
        setStatus("offline", why);
        if (state.ws === ws && state.me) $("reconnect").hidden = false;
        if (!connected) reject(new Error(why));
      };
      ws.onopen = async () => {
        try {
          const deviceId = `web-${Math.random().toString(36).slice(2, 10)}`;
          const { value } = await request("connect", {
            token: user,
            device_id: deviceId,
            device_kind: T.WEB,
            client_info: "im-engine web-chat",
          });
          connected = true;
          const every = Math.max(1000, num(value.heartbeat_interval_ms) / 2);
          state.heartbeat = setInterval(() => {
            if (ws.readyState === WebSocket.OPEN) sendFrame("ping", { client_time_ms: Date.now() });
          }, every);
          resolve(value);
        } catch (e) {
          reject(e);
        }
      };
    });
  }

  // ------------------------------------------------------------ conversations

  function scheduleList() {
    clearTimeout(state.listTimer);
    state.listTimer = setTimeout(refreshList, 150);
  }

  async function refreshList() {
    try {
      const { value } = await request("list_conversations", { limit: 200 });
      state.conversations.clear();
      for (const c of value.conversations) state.conversations.set(key(c.conversation), c);
      renderList();
    } catch (e) {
      showError(`could not list conversations: ${e.message}`);
    }
  }

  function title(ref) {
    return ref.kind === T.GROUP ? `#${ref.id}` : ref.kind === T.ROOM ? `~${ref.id}` : ref.id;
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
        last.textContent = `${c.last_message.sender_user}: ${text.decode(c.last_message.body)}`;
      }
      li.append(name, badge, last);
      li.onclick = () => openConversation({ kind: c.conversation.kind, id: c.conversation.id });
      list.append(li);
    }
  }

  async function openConversation(ref) {
    const k = key(ref);
    state.open = { key: k, ref, messages: new Map(), oldest: 0, newest: 0, hasMore: false };
    $("conversation-title").textContent = title(ref);
    $("message-list").textContent = "";
    $("compose").hidden = false;
    $("chat-error").textContent = "";
    renderList();
    try {
      const { value } = await request("pull", {
        conversation: ref,
        after_seq: 0,
        until_seq: 0,
        limit: PAGE,
        newest: true,
      });
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
      const { value } = await request("pull", {
        conversation: open.ref,
        after_seq: 0,
        until_seq: open.oldest - 1,
        limit: PAGE,
        newest: true,
      });
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

  /** Adds messages of the open conversation, in seq order, once each. */
  function addMessages(messages, { scroll }) {
    const open = state.open;
    const box = $("messages");
    const fromBottom = box.scrollHeight - box.scrollTop;
    const atBottom = fromBottom - box.clientHeight < 40;
    for (const m of messages) {
      const seq = num(m.seq);
      if (open.messages.has(seq)) continue;
      open.messages.set(seq, m);
      open.oldest = open.oldest ? Math.min(open.oldest, seq) : seq;
      open.newest = Math.max(open.newest, seq);
      const li = renderMessage(m);
      // Insert before the first rendered message with a higher seq.
      const after = [...$("message-list").children].find((el) => num(el.dataset.seq) > seq);
      $("message-list").insertBefore(li, after || null);
    }
    if (scroll === "keep") box.scrollTop = box.scrollHeight - fromBottom;
    else if (scroll === "bottom" || atBottom) box.scrollTop = box.scrollHeight;
  }

  function renderMessage(m) {
    const li = document.createElement("li");
    li.dataset.seq = String(num(m.seq));
    li.dataset.testid = "message";
    if (m.sender_user === state.me) li.classList.add("mine");
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = m.sender_user;
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text.decode(m.body);
    const time = document.createElement("time");
    const at = new Date(num(m.server_time_ms));
    time.dateTime = at.toISOString();
    time.textContent = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    li.append(who, body, time);
    return li;
  }

  function onMessages(messages) {
    for (const m of messages) noteLast(m);
    const open = state.open;
    const mine = open ? messages.filter((m) => key(m.conversation) === open.key) : [];
    if (mine.length) {
      addMessages(mine, {});
      if (document.visibilityState === "visible") markRead();
    }
    scheduleList();
  }

  async function onNotify(n) {
    const open = state.open;
    const head = num(n.head_seq);
    if (open && key(n.conversation) === open.key && head > open.newest) {
      try {
        // Catch up page by page until the notified head; with nothing
        // loaded yet, only the newest page (older history is scrolled to).
        const fresh = open.newest === 0;
        for (;;) {
          const { value } = await request("pull", {
            conversation: open.ref,
            after_seq: open.newest,
            until_seq: head,
            limit: 200,
            newest: fresh,
          });
          if (state.open !== open) break;
          const before = open.newest;
          addMessages(value.messages, {});
          if (fresh || !value.has_more || open.newest <= before) break;
        }
        if (state.open === open) markRead();
      } catch (e) {
        showError(e.message);
      }
    }
    scheduleList();
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
        const { value } = await request("read", { conversation: ref, seq });
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

  async function send(body) {
    const open = state.open;
    if (!open) return;
    const id = (crypto.randomUUID && crypto.randomUUID()) || `${Date.now()}-${Math.random()}`;
    const bytes = utf8.encode(body);
    try {
      const { value } = await request("send", {
        client_msg_id: id,
        conversation: open.ref,
        body: bytes,
      });
      const m = {
        conversation: open.ref,
        seq: value.seq,
        sender_user: state.me,
        body: bytes,
        server_time_ms: value.server_time_ms,
      };
      if (state.open === open) addMessages([m], { scroll: "bottom" });
      noteLast(m);
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

  $("login").addEventListener("submit", async (e) => {
    e.preventDefault();
    const user = $("login-user").value.trim();
    $("login-error").textContent = "";
    $("login-button").disabled = true;
    try {
      if (!T) await loadSchema();
      const connected = await connect(user);
      state.me = connected.user_id;
      $("me").textContent = `logged in as ${state.me}`;
      setStatus("online", "online");
      $("login").hidden = true;
      $("chat").hidden = false;
      await refreshList();
    } catch (err) {
      $("login-error").textContent = err.message;
    } finally {
      $("login-button").disabled = false;
    }
  });

  // Reconnect and converge: the list and the open conversation are reloaded
  // from the server, so nothing sent meanwhile is missed.
  $("reconnect").addEventListener("click", async () => {
    $("reconnect").hidden = true;
    try {
      await connect(state.me);
      setStatus("online", "online");
      await refreshList();
      if (state.open) await openConversation(state.open.ref);
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
    openConversation({ kind: T.DIRECT, id: user });
  });

  $("compose").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("compose-text");
    const body = input.value;
    if (!body.trim()) return;
    input.value = "";
    send(body);
  });

  $("load-older").addEventListener("click", loadOlder);
  $("messages").addEventListener("scroll", () => {
    if ($("messages").scrollTop < 30) loadOlder();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") markRead();
  });
})();
