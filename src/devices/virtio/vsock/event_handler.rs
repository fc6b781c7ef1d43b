//! Event-loop glue: the RX and TX queue eventfds, the host listener, the timeout timer and
//! every host socket are watched by the device's one subscription; each fd carries a data tag
//! (`muxer::EV_*`) that says what it is.

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::muxer::{EV_RX, EV_TX};
use super::{RXQ, TXQ, Vsock};

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        for (q, tag) in [(RXQ, EV_RX), (TXQ, EV_TX)] {
            if let Err(e) = ops.add(Events::with_data(self.queue_event(q), tag, EventSet::IN)) {
                log::error!("vsock: cannot watch queue {q}'s eventfd: {e:?}");
            }
        }
        self.muxer.register(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.handle_event(events, ops);
    }
}
