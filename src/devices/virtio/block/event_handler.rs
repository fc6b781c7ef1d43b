//! Event-loop glue: the queue's ioeventfd wakes the event-manager thread, which serves the
//! queue.

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Block;

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.queue_event(), EventSet::IN)) {
            log::error!("virtio-blk: cannot watch the queue eventfd: {e:?}");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.event_set().contains(EventSet::IN) {
            // Drain the counter; a notification before DRIVER_OK is simply dropped.
            let _ = self.queue_event().read();
            self.process_queue();
        }
    }
}
