// The reference front end: the whole account life cycle in cookie mode. The refresh token
// lives in an HttpOnly cookie the API sets, so nothing here (or injected here) can read
// it; the access token lives only in the Session object's memory, and a reload gets a new
// one from the cookie.
import { ApiError, Session, createApiClient, unwrap } from "@jobpath/client";

const API =
  new URLSearchParams(location.search).get("api") ??
  document.querySelector('meta[name="jobpath-api"]').content;
// Not a secret: only whether a reload should try the cookie, so that a first visit does
// not start with a refused refresh.
const SIGNED_IN = "jobpath:signed-in";

const $ = (id) => document.getElementById(id);
const anonymous = createApiClient(API);
const session = new Session({ baseUrl: API, refreshTransport: "cookie", onChange: render });

function say(text) {
  $("status").textContent = text;
}

function failed(error) {
  say(error instanceof ApiError ? `${error.code}: ${error.message}` : String(error));
}

function render(state) {
  $("signed-out").hidden = state !== null;
  $("signed-in").hidden = state === null;
  if (state === null) {
    localStorage.removeItem(SIGNED_IN);
    $("sessions").replaceChildren();
    return;
  }
  localStorage.setItem(SIGNED_IN, "1");
  $("account-email").textContent = state.user.email;
  $("account-id").textContent = state.user.id;
}

async function listSessions() {
  const { sessions } = unwrap(await session.api.GET("/auth/sessions"));
  const items = sessions.map((s) => {
    const item = document.createElement("li");
    item.dataset.session = s.id;
    item.textContent = `${s.user_agent ?? "unknown client"}, since ${new Date(s.created_at).toLocaleString()}`;
    if (s.current) {
      item.dataset.current = "";
      item.append(" (this one)");
    } else {
      const end = document.createElement("button");
      end.type = "button";
      end.textContent = "End";
      end.addEventListener("click", () => endSession(s.id).catch(failed));
      item.append(" ", end);
    }
    return item;
  });
  $("sessions").replaceChildren(...items);
}

async function endSession(id) {
  const { response, error } = await session.api.DELETE("/auth/sessions/{session_id}", {
    params: { path: { session_id: id } },
  });
  if (!response.ok) throw new ApiError(response.status, error, response.headers);
  say("Session ended");
  await listSessions();
}

function fields(form) {
  const data = new FormData(form);
  return { email: String(data.get("email")), password: String(data.get("password")) };
}

$("signup").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const account = unwrap(await anonymous.POST("/auth/signup", { body: fields(event.target) }));
    say(`Account created for ${account.email}; log in`);
  } catch (e) {
    failed(e);
  }
});

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const { email, password } = fields(event.target);
  try {
    await session.login(email, password);
    say("Logged in");
    await listSessions();
  } catch (e) {
    failed(e);
  }
});

$("reload-sessions").addEventListener("click", () => listSessions().catch(failed));

$("logout").addEventListener("click", async () => {
  try {
    await session.logout();
    say("Logged out");
  } catch (e) {
    failed(e);
  }
});

// A reload: the access token is gone with the old page; the cookie renews the session.
if (localStorage.getItem(SIGNED_IN)) {
  session
    .restore()
    .then(async (state) => {
      if (state === null) return render(null);
      say("Welcome back");
      await listSessions();
    })
    .catch(failed);
}
document.documentElement.dataset.ready = "";
