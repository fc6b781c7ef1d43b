//! Event fan-out. Any thread publishes into the [`EventHub`] (the lifecycle service's
//! observer, the main thread when the VM stops, the control server itself); the server thread
//! drains it and copies each event into every subscriber's bounded [`SubscriberQueue`]. A
//! subscriber that lets [`MAX_QUEUED_EVENTS`] pile up is dropped, so no client can stall the
//! VM or grow micro-vmm's memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use vmm_sys_util::eventfd::EventFd;

use super::protocol::Event;
use crate::lifecycle::protocol::GuestEvent;

/// Events a subscriber may have waiting before it is dropped.
pub const MAX_QUEUED_EVENTS: usize = 1024;
/// Events the hub holds before the server thread takes them (it takes them at once; this
/// only bounds a stalled server).
const MAX_INBOX: usize = 4096;

/// Where events are published; wakes the server thread.
pub struct EventHub {
    inbox: Mutex<VecDeque<Event>>,
    wake: Arc<EventFd>,
}

impl EventHub {
    pub fn new() -> Result<Self, super::ControlError> {
        Ok(EventHub {
            inbox: Mutex::new(VecDeque::new()),
            wake: Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(super::ControlError::Eventfd)?),
        })
    }

    /// Queues an event for every subscriber. Never blocks on a client.
    pub fn publish(&self, event: Event) {
        {
            let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
            if inbox.len() >= MAX_INBOX {
                log::warn!("control socket: event inbox full; dropping {event:?}");
                return;
            }
            inbox.push_back(event);
        }
        self.wake();
    }

    /// Publishes the control events for an accepted guest lifecycle event.
    pub fn publish_guest_event(&self, event: &GuestEvent) {
        for e in events_for(event) {
            self.publish(e);
        }
    }

    /// Takes everything published so far, in order.
    pub fn drain(&self) -> VecDeque<Event> {
        std::mem::take(&mut *self.inbox.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Wakes the server thread.
    pub fn wake(&self) {
        // Fails only when the counter would overflow: the thread is awake anyway.
        let _ = self.wake.write(1);
    }

    /// The eventfd the server thread polls.
    pub(super) fn wake_fd(&self) -> &EventFd {
        &self.wake
    }
}

/// The control events for one guest lifecycle event (docs/api.md): the payload event, then
/// the `VirtualMachineState` it moves the VM to.
pub fn events_for(event: &GuestEvent) -> Vec<Event> {
    match event {
        GuestEvent::Hello { .. } => Vec::new(),
        GuestEvent::Started => vec![Event::PayloadStarted, Event::State { state: "STARTED" }],
        GuestEvent::Ready => vec![Event::PayloadReady, Event::State { state: "READY" }],
        GuestEvent::Finished { exit_code } => vec![
            Event::PayloadFinished {
                exit_code: *exit_code,
            },
            Event::State { state: "FINISHED" },
        ],
        GuestEvent::Error { code, message } => vec![Event::Error {
            code: code.name(),
            message: message.clone(),
        }],
    }
}

/// Serialized event lines waiting for one subscriber.
#[derive(Debug, Default)]
pub struct SubscriberQueue {
    lines: VecDeque<Arc<[u8]>>,
}

/// The subscriber let too many events pile up.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

impl SubscriberQueue {
    /// Queues a line; [`Overflow`] when [`MAX_QUEUED_EVENTS`] are already waiting.
    pub fn push(&mut self, line: Arc<[u8]>) -> Result<(), Overflow> {
        if self.lines.len() >= MAX_QUEUED_EVENTS {
            return Err(Overflow);
        }
        self.lines.push_back(line);
        Ok(())
    }

    pub fn pop(&mut self) -> Option<Arc<[u8]>> {
        self.lines.pop_front()
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::ErrorCode;

    #[test]
    fn hub_keeps_order_and_wakes() {
        let hub = EventHub::new().unwrap();
        hub.publish(Event::Paused);
        hub.publish_guest_event(&GuestEvent::Finished { exit_code: 3 });
        hub.publish_guest_event(&GuestEvent::Hello { version: 1 });
        assert_eq!(hub.wake_fd().read().unwrap(), 3);
        assert_eq!(
            Vec::from(hub.drain()),
            vec![
                Event::Paused,
                Event::PayloadFinished { exit_code: 3 },
                Event::State { state: "FINISHED" }
            ]
        );
        assert!(hub.drain().is_empty());
        for _ in 0..MAX_INBOX + 10 {
            hub.publish(Event::Resumed);
        }
        assert_eq!(hub.drain().len(), MAX_INBOX);
    }

    #[test]
    fn guest_events_map_to_api_events() {
        assert_eq!(
            events_for(&GuestEvent::Error {
                code: ErrorCode::PayloadVerificationFailed,
                message: "m".into()
            }),
            vec![Event::Error {
                code: "PAYLOAD_VERIFICATION_FAILED",
                message: "m".into()
            }]
        );
        assert_eq!(
            events_for(&GuestEvent::Started),
            vec![Event::PayloadStarted, Event::State { state: "STARTED" }]
        );
    }

    #[test]
    fn a_subscriber_queue_is_bounded() {
        let mut q = SubscriberQueue::default();
        let line: Arc<[u8]> = Arc::from(&b"x\n"[..]);
        for _ in 0..MAX_QUEUED_EVENTS {
            q.push(line.clone()).unwrap();
        }
        assert_eq!(q.push(line.clone()), Err(Overflow));
        assert_eq!(q.len(), MAX_QUEUED_EVENTS);
        assert!(q.pop().is_some());
        q.push(line).unwrap();
    }
}
