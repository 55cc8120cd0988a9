import { $, api, boot, hide, show } from "./common.js";

const form = $("#login-form");
const error = $("#login-error");
$("#username").focus();

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  hide(error);
  const username = $("#username").value.trim();
  const password = $("#password").value;
  if (!username || !password) {
    show(error, username ? "Enter your password." : "Enter your user name.");
    return;
  }
  const button = $("#login-submit");
  button.disabled = true;
  try {
    const { user } = await api("/auth/login", { method: "POST", body: { username, password } });
    const home = user.role === "consumer" ? "/portal" : "/";
    location.assign(boot.root + (boot.next || home));
  } catch (err) {
    show(error, err.status === 401 ? "Wrong user name or password." : err.message);
    button.disabled = false;
  }
});
