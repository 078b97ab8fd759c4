//! Starts a section's tasks (its listener, one task per peer) and does its
//! housekeeping (expiry, rate refresh, table-size metrics). A reload starts and
//! stops single peers and listeners through the same functions.

use crate::section::Section;
use std::sync::Arc;
use stktagg_topology::PeerId;
use tokio::task::JoinSet;

/// Starts the section's tasks: listener, one task per peer, housekeeping. They
/// all stop with the section's token.
pub fn start(section: &Arc<Section>, listener: tokio::net::TcpListener, tasks: &mut JoinSet<()>) {
    start_listener(section, listener, tasks);
    let core = section.core();
    for peer in core.live_peers() {
        start_peer(section, peer.id, tasks);
    }
    tasks.spawn(housekeeping(section.clone()));
}

/// Starts accepting on `listener`; the listener it replaces, if any, stops.
pub fn start_listener(
    section: &Arc<Section>,
    listener: tokio::net::TcpListener,
    tasks: &mut JoinSet<()>,
) {
    let token = section.cancel.child_token();
    section.set_listener(token.clone());
    tasks.spawn(crate::listener::run(section.clone(), listener, token));
}

/// Starts `peer`'s task (its mailbox must be fresh: [`Section::renew_mailbox`]
/// for a peer whose task ran before).
pub fn start_peer(section: &Arc<Section>, peer: PeerId, tasks: &mut JoinSet<()>) {
    let Some(rx) = section.take_mailbox(peer.0) else {
        return;
    };
    let (cancel, done) = section.register_peer_task(peer);
    let section = section.clone();
    tasks.spawn(async move {
        crate::peer::run(section, peer, rx, cancel).await;
        done.cancel();
    });
}

/// Expires contributions and re-publishes decaying rates.
///
/// The rate refresh checks each key with a non-zero rate against what receivers read
/// from its published counter. It visits at most `REFRESH_BUDGET` keys per 250 ms
/// tick: a table with fewer active keys is checked whole at every tick (receivers
/// stay within one tick of the true sum); a larger one is checked in rounds of
/// several ticks, so that the refresh never costs more than a few percent of a core
/// and never holds up fresh changes.
async fn housekeeping(section: Arc<Section>) {
    const TICK: std::time::Duration = std::time::Duration::from_millis(250);
    const REFRESH_BUDGET: usize = 2048;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = section.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = section.clock.now_ms();
        // Both passes can visit many keys: off the async workers, so that sessions
        // on the same worker are not held up behind them.
        let store = section.store.clone();
        let _ = tokio::task::spawn_blocking(move || {
            store.expire(now);
            store.refresh_rates_budget(now, REFRESH_BUDGET);
        })
        .await;
        crate::metrics::table_sizes(&section.core());
    }
}
