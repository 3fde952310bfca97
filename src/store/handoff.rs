//! Hand-off: a delivery created by an ingest commit goes straight to its destination's worker,
//! already leased and with its event in memory, instead of waiting to be claimed: no second
//! round trip to the writer, no re-read or re-parse of the event. A worker takes only what it
//! has room for and only while it is sending (not paused); the rest stays pending in the queue
//! and is claimed as before. The lease makes a hand-off as durable as a claim: if the process
//! dies before the send is recorded, the lease runs out and the delivery goes out again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, Notify};

use crate::destinations::Subject;

struct Slot {
    sender: mpsc::Sender<LeasedDelivery>,
    accepting: AtomicBool,
    lease_ms: i64,
    /// A commit left deliveries for this destination pending: its worker should claim.
    left_pending: AtomicBool,
    wake: Notify,
    /// A commit handed deliveries over. Signalled once all of a commit's are in the channel,
    /// so the worker takes them together (one request for a batch, not one per delivery).
    handed: Notify,
    /// Set with `handed`, so a busy worker can take complete hand-offs without waiting.
    handed_ready: AtomicBool,
}

impl Slot {
    fn flag(&self) {
        self.left_pending.store(true, Ordering::Release);
        // A stored permit if the worker is busy: the wake-up is never lost.
        self.wake.notify_one();
    }
}

/// The workers that take hand-offs, by destination name.
#[derive(Default)]
pub struct HandOffs {
    slots: RwLock<HashMap<String, Arc<Slot>>>,
}

/// A worker's end: deliveries handed to it, and its say in whether it takes more.
pub struct HandOffReceiver {
    receiver: mpsc::Receiver<LeasedDelivery>,
    slot: Arc<Slot>,
}

impl HandOffReceiver {
    /// Whether the writer may hand deliveries over now (false while paused or probing).
    pub fn set_accepting(&self, accepting: bool) {
        self.slot.accepting.store(accepting, Ordering::Release);
    }

    /// What complete commits have handed over so far, without waiting.
    pub fn take_handed(&mut self) -> Vec<LeasedDelivery> {
        let mut handed = Vec::new();
        if self.slot.handed_ready.swap(false, Ordering::AcqRel) {
            while let Ok(delivery) = self.receiver.try_recv() {
                handed.push(delivery);
            }
        }
        handed
    }

    /// Wait until a commit has handed deliveries over, then take them all.
    pub async fn recv_handed(&mut self) -> Vec<LeasedDelivery> {
        loop {
            self.slot.handed.notified().await;
            let handed = self.take_handed();
            if !handed.is_empty() {
                return handed;
            }
        }
    }

    /// Whether deliveries were left pending since the last call (then a claim finds them).
    pub fn take_left_pending(&self) -> bool {
        self.slot.left_pending.swap(false, Ordering::AcqRel)
    }

    /// A separate handle to wait on, alongside `recv`.
    pub fn pending_signal(&self) -> PendingSignal {
        PendingSignal(self.slot.clone())
    }
}

/// Wakes a worker when deliveries were left pending for its destination.
pub struct PendingSignal(Arc<Slot>);

impl PendingSignal {
    pub async fn wait(&self) {
        self.0.wake.notified().await;
    }
}

impl HandOffs {
    /// Register a destination's worker: at most `capacity` handed-off deliveries wait for it,
    /// each leased for `lease_ms`.
    pub fn register(&self, destination: &str, capacity: usize, lease_ms: i64) -> HandOffReceiver {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let slot = Arc::new(Slot {
            sender,
            accepting: AtomicBool::new(true),
            lease_ms,
            // Whatever is already queued is found by a first claim.
            left_pending: AtomicBool::new(true),
            wake: Notify::new(),
            handed: Notify::new(),
            handed_ready: AtomicBool::new(false),
        });
        self.slots
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(destination.to_string(), slot.clone());
        HandOffReceiver { receiver, slot }
    }

    /// Every worker should look: deliveries became due outside a commit of new ones (expired
    /// leases put back in line).
    pub fn flag_all(&self) {
        for slot in self
            .slots
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
        {
            slot.flag();
        }
    }

    fn slot(&self, destination: &str) -> Option<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(destination)
            .cloned()
    }
}

/// Room reserved in a worker's hand-off queue for one new delivery, and its lease.
pub struct Reservation {
    permit: mpsc::OwnedPermit<LeasedDelivery>,
    slot: Arc<Slot>,
    pub lease_ms: i64,
}

/// The hand-offs of one transaction: reserved while it is applied, sent after its commit,
/// dropped (nothing sent) if it rolls back.
pub struct HandOffPlan {
    handoffs: Arc<HandOffs>,
    reserved: Vec<(Reservation, LeasedDelivery)>,
    /// Workers whose deliveries this transaction left pending (no room, or paused).
    left_pending: Vec<Arc<Slot>>,
}

impl HandOffPlan {
    pub fn new(handoffs: Arc<HandOffs>) -> HandOffPlan {
        HandOffPlan {
            handoffs,
            reserved: Vec::new(),
            left_pending: Vec::new(),
        }
    }

    /// Room for one more delivery to `destination`, if its worker takes hand-offs now. If not,
    /// the delivery is created pending and the worker is told after the commit.
    pub fn reserve(&mut self, destination: &str) -> Option<Reservation> {
        let slot = self.handoffs.slot(destination)?;
        let permit = if slot.accepting.load(Ordering::Acquire) {
            slot.sender.clone().try_reserve_owned().ok()
        } else {
            None
        };
        match permit {
            Some(permit) => Some(Reservation {
                permit,
                lease_ms: slot.lease_ms,
                slot,
            }),
            None => {
                if !self.left_pending.iter().any(|s| Arc::ptr_eq(s, &slot)) {
                    self.left_pending.push(slot);
                }
                None
            }
        }
    }

    pub fn hand_over(&mut self, reservation: Reservation, delivery: LeasedDelivery) {
        self.reserved.push((reservation, delivery));
    }

    /// After the commit: every reserved delivery to its worker, and a wake-up to the workers
    /// whose new deliveries wait in the queue.
    pub fn send(&mut self) {
        let mut handed: Vec<Arc<Slot>> = Vec::new();
        for (reservation, delivery) in self.reserved.drain(..) {
            reservation.permit.send(delivery);
            if !handed.iter().any(|s| Arc::ptr_eq(s, &reservation.slot)) {
                handed.push(reservation.slot);
            }
        }
        // Only now, with every delivery of the commit in place, wake the workers.
        for slot in handed {
            slot.handed_ready.store(true, Ordering::Release);
            slot.handed.notify_one();
        }
        for slot in self.left_pending.drain(..) {
            slot.flag();
        }
    }

    /// After a rollback: nothing was stored, nothing is sent.
    pub fn discard(&mut self) {
        self.reserved.clear();
        self.left_pending.clear();
    }

    /// Every worker should look (expired leases were put back in line).
    pub fn flag_all(&self) {
        self.handoffs.flag_all();
    }
}

/// A delivery handed to a destination worker, its subject parsed.
#[derive(Debug, Clone)]
pub struct LeasedDelivery {
    pub id: i64,
    pub event_id: String,
    /// This attempt's number (1 for the first).
    pub attempt: i64,
    /// Failed attempts since the last re-queue (the retry schedule step).
    pub failures: i64,
    pub event_time_ms: i64,
    pub solo: bool,
    pub subject: Subject,
}

/// How a new delivery starts: in flight to this node's worker (leased), or pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub status: &'static str,
    pub lease_until_ms: Option<i64>,
    pub attempts: i64,
}

impl Start {
    pub fn of(reservation: Option<&Reservation>, now_ms: i64) -> Start {
        match reservation {
            // Counted when a request carries it, as a claimed one is.
            Some(r) => Start {
                status: "in_flight",
                lease_until_ms: Some(now_ms + r.lease_ms),
                attempts: 0,
            },
            None => Start {
                status: "pending",
                lease_until_ms: None,
                attempts: 0,
            },
        }
    }
}

impl HandOffPlan {
    /// Room for each new delivery whose worker takes hand-offs now and whose destination the
    /// fleet has not paused; the others are created pending (and their workers told).
    pub fn reserve_for(
        &mut self,
        deliveries: &[crate::stage::rows::DeliveryInsert],
        paused: &[String],
    ) -> Vec<Option<Reservation>> {
        deliveries
            .iter()
            .map(|d| {
                if paused.contains(&d.destination) {
                    None
                } else {
                    self.reserve(&d.destination)
                }
            })
            .collect()
    }

    /// After the deliveries are inserted: the reserved ones go to their workers after the
    /// commit.
    pub fn hand_over_inserted(
        &mut self,
        deliveries: &[crate::stage::rows::DeliveryInsert],
        reservations: Vec<Option<Reservation>>,
    ) {
        for (delivery, reservation) in deliveries.iter().zip(reservations) {
            if let Some(reservation) = reservation {
                self.hand_over(
                    reservation,
                    LeasedDelivery {
                        id: delivery.id,
                        event_id: delivery.event_id.clone(),
                        attempt: 1,
                        failures: 0,
                        event_time_ms: delivery.event_time_ms,
                        solo: false,
                        subject: delivery.subject.clone(),
                    },
                );
            }
        }
    }
}
