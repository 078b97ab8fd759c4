//! systemd's readiness protocol (`Type=notify`): `READY=1` once every listener
//! is bound, `RELOADING=1` with `MONOTONIC_USEC` then `READY=1` around a reload,
//! `STOPPING=1` on the way out. Outside systemd (no `NOTIFY_SOCKET`) each call
//! does nothing.
//!
//! A notification that cannot be sent is logged and otherwise ignored: the
//! daemon works the same with or without a service manager listening.

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Every listener is bound (at start, or a reload is over): `READY=1`, with a
/// status line for `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts: `RELOADING=1` and the monotonic clock reading systemd
/// (253 and later, `Type=notify-reload`) wants with it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The daemon is stopping: `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}
