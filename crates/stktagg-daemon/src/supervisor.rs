//! Starts a section's tasks (its listener, one task per peer) and does its
//! housekeeping (expiry, rate refresh, table-size metrics).

use crate::section::Section;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Starts the section's tasks: listener, one task per peer, housekeeping.
pub fn start(
    section: &Arc<Section>,
    listener: tokio::net::TcpListener,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: CancellationToken,
) {
    tasks.spawn(crate::listener::run(
        section.clone(),
        listener,
        shutdown.clone(),
    ));
    for peer in section.peers.iter() {
        let Some(rx) = section.take_mailbox(peer.id.0) else {
            continue;
        };
        tasks.spawn(crate::peer::run(
            section.clone(),
            peer.id,
            rx,
            shutdown.clone(),
        ));
    }
    tasks.spawn(housekeeping(section.clone(), shutdown));
}

/// Expires contributions and re-publishes decaying rates.
///
/// The rate refresh checks each key with a non-zero rate against what receivers read
/// from its published counter. It visits at most `REFRESH_BUDGET` keys per 250 ms
/// tick: a table with fewer active keys is checked whole at every tick (receivers
/// stay within one tick of the true sum); a larger one is checked in rounds of
/// several ticks, so that the refresh never costs more than a few percent of a core
/// and never holds up fresh changes.
async fn housekeeping(section: Arc<Section>, shutdown: CancellationToken) {
    const TICK: std::time::Duration = std::time::Duration::from_millis(250);
    const REFRESH_BUDGET: usize = 2048;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
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
        crate::metrics::table_sizes(&section.core);
    }
}
