//! How the tasks that share a connection are woken.
//!
//! The task that receives polls reads with its own waker: the hot path costs what
//! it costs on a plain socket. Writes are different: the receiver
//! (flushing pongs and pushed frames) and sending tasks (waiting for room) may poll
//! the same transport, and most transports remember one waker per direction, so a
//! later poll would silently replace an earlier task's registration. Writes are
//! therefore polled with one shared waker, [`Wakers`], which wakes the receiver and
//! every task registered as waiting to send; each re-checks its own condition.
//!
//! The runtime's timer is polled with the shared waker too, and its wake count
//! says whether the timer can have fired since it was last polled: a receiver
//! waiting for input need not poll an unchanged timer again (see
//! `Io::poll_timer`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;

#[derive(Default)]
pub(crate) struct Wakers {
    inner: Mutex<Inner>,
    /// How many times the transport woke us: lets a sender register only once it
    /// has to wait, without missing a wake that came in between (see
    /// [`Wakers::wait_to_send`]). Changed and compared under `inner`'s lock; read
    /// without it, so that a send that does not wait takes no lock here.
    wakes: AtomicU64,
    /// The data and vtable pointers of the recorded receiver: what
    /// [`Waker::will_wake`] compares. Only the receiving task records itself,
    /// from a `&mut` handle, so no two calls of [`Wakers::set_receiver`] run at
    /// once, and a receiver that finds itself recorded takes no lock.
    receiver_id: [AtomicUsize; 2],
}

#[derive(Default)]
struct Inner {
    /// The receiving task. Kept across wake-ups: it is the same task poll after poll,
    /// so storing it costs a comparison, not a clone.
    receiver: Option<Waker>,
    /// Tasks waiting to send; drained (keeping capacity) when woken. Boxed: most
    /// connections never have a sender wait, and every idle one carries this.
    #[allow(clippy::box_collection)]
    senders: Option<Box<Vec<Waker>>>,
}

impl Wakers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the receiving task. It is the same task poll after poll, so the
    /// common call compares two pointers and takes no lock.
    pub(crate) fn set_receiver(&self, waker: &Waker) {
        let id = [waker.data() as usize, waker.vtable() as *const _ as usize];
        if self.receiver_id[0].load(Ordering::Relaxed) == id[0] && self.receiver_id[1].load(Ordering::Relaxed) == id[1]
        {
            return;
        }
        let mut inner = self.lock();
        inner.receiver = Some(waker.clone());
        self.receiver_id[0].store(id[0], Ordering::Relaxed);
        self.receiver_id[1].store(id[1], Ordering::Relaxed);
    }

    /// The transport's wake count, read before a sending task polls it.
    pub(crate) fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Acquire)
    }

    /// Registers a sending task whose poll of the transport (begun when the wake
    /// count was `before`) must wait. Had the transport woken us meanwhile, that
    /// wake found no registration: the task is woken at once to poll again.
    pub(crate) fn wait_to_send(&self, waker: &Waker, before: u64) {
        let mut inner = self.lock();
        if self.wakes.load(Ordering::Acquire) != before {
            waker.wake_by_ref();
        } else {
            let senders = inner.senders.get_or_insert_default();
            if !senders.iter().any(|w| w.will_wake(waker)) {
                senders.push(waker.clone());
            }
        }
    }

    /// The receiving task's waker, to wake later: a caller queueing frames for
    /// many connections under a lock of its own wakes them all once it let go.
    pub(crate) fn receiver(&self) -> Option<Waker> {
        self.lock().receiver.clone()
    }

    /// Wakes the receiving task only (frames were queued for it to write).
    pub(crate) fn wake_receiver(&self) {
        if let Some(waker) = &self.lock().receiver {
            waker.wake_by_ref();
        }
    }
}

impl futures_task::ArcWake for Wakers {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        // Waking only schedules tasks, so holding the lock is brief.
        let mut inner = arc_self.lock();
        arc_self.wakes.fetch_add(1, Ordering::AcqRel);
        if let Some(receiver) = &inner.receiver {
            receiver.wake_by_ref();
        }
        for waker in inner.senders.iter_mut().flat_map(|senders| senders.drain(..)) {
            waker.wake();
        }
    }
}
