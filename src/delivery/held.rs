//! What a worker holds between its claim and its requests, as plain data: the deliveries it
//! leased, each with its lane (which requests it may share) and until when its lease keeps it
//! this node's; which endpoints a platform asked to leave alone for a while; and how the next
//! request's items are taken. Nothing here is written anywhere: an item that waits its turn
//! costs no row.

use std::collections::{HashMap, VecDeque};

use crate::destinations::Lane;
use crate::store::LeasedDelivery;

/// A leased delivery waiting in the worker for its request.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub item: LeasedDelivery,
    pub lane: Lane,
    pub lease_until_ms: i64,
}

/// Endpoints the platform asked to leave alone (429 with Retry-After, or its rate-limit
/// headers saying nothing is left), until when.
#[derive(Debug, Default, Clone)]
pub(super) struct Holds(HashMap<&'static str, i64>);

impl Holds {
    pub fn hold(&mut self, endpoint: &'static str, until_ms: i64) {
        let until = self.0.entry(endpoint).or_insert(until_ms);
        *until = (*until).max(until_ms);
    }

    pub fn holds(&self, endpoint: &str, now_ms: i64) -> bool {
        self.0.get(endpoint).is_some_and(|until| *until > now_ms)
    }

    /// The soonest a held endpoint is free again.
    pub fn next_free_ms(&self, now_ms: i64) -> Option<i64> {
        self.0
            .values()
            .copied()
            .filter(|until| *until > now_ms)
            .min()
    }
}

/// The next request's items: the first item whose endpoint is not held, and after it the items
/// of its lane, up to `limit` (a `solo` item, or a probe, goes alone). The rest keep their
/// order. Empty when every held item waits for its endpoint.
pub(super) fn take_request(
    buffer: &mut VecDeque<Held>,
    limit: usize,
    probing: bool,
    holds: &Holds,
    now_ms: i64,
) -> Vec<Held> {
    let Some(first) = buffer
        .iter()
        .position(|h| !holds.holds(h.lane.endpoint, now_ms))
    else {
        return Vec::new();
    };
    if probing || buffer[first].item.solo {
        return buffer.remove(first).into_iter().collect();
    }
    let lane = buffer[first].lane;
    let fits = |h: &Held| h.lane == lane && !h.item.solo;
    // The usual case, a batching destination: the front of the line, all of one lane.
    let run = buffer
        .iter()
        .skip(first)
        .take(limit)
        .take_while(|h| fits(h))
        .count();
    if first == 0 && (run == limit || run == buffer.len()) {
        return buffer.drain(..run).collect();
    }
    // One client's one event (GA4 with many clients): taken out where it stands.
    if run == 1 && (limit == 1 || !buffer.iter().skip(first + 1).any(&fits)) {
        return buffer.remove(first).into_iter().collect();
    }
    let mut taken = Vec::with_capacity(limit.min(buffer.len()));
    let mut kept = VecDeque::with_capacity(buffer.len());
    for (index, held) in buffer.drain(..).enumerate() {
        if index >= first && taken.len() < limit && fits(&held) {
            taken.push(held);
        } else {
            kept.push_back(held);
        }
    }
    *buffer = kept;
    taken
}

/// Items whose lease ends before `renew_before_ms`, given a lease until `until_ms`: their
/// ids, for the store to extend (only a worker that holds items longer than half a lease pays
/// for it).
pub(super) fn renew(buffer: &mut VecDeque<Held>, renew_before_ms: i64, until_ms: i64) -> Vec<i64> {
    buffer
        .iter_mut()
        .filter(|h| h.lease_until_ms < renew_before_ms)
        .map(|h| {
            h.lease_until_ms = until_ms;
            h.item.id
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::{ProfileSnapshot, Subject};

    fn held(id: i64, endpoint: &'static str, group: u64) -> Held {
        Held {
            item: LeasedDelivery {
                id,
                event_id: format!("ev{id}"),
                attempt: 1,
                failures: 0,
                event_time_ms: 0,
                solo: false,
                subject: Subject::Profile(ProfileSnapshot {
                    profile_id: id,
                    message_id: String::new(),
                    user_id: None,
                    anonymous_id: None,
                    traits: Default::default(),
                    problems: Vec::new(),
                }),
            },
            lane: Lane { endpoint, group },
            lease_until_ms: 1_000,
        }
    }

    fn ids(items: &[Held]) -> Vec<i64> {
        items.iter().map(|h| h.item.id).collect()
    }

    fn left(buffer: &VecDeque<Held>) -> Vec<i64> {
        buffer.iter().map(|h| h.item.id).collect()
    }

    #[test]
    fn a_batch_is_the_front_of_the_line() {
        let mut buffer: VecDeque<Held> = (1..=5).map(|id| held(id, "", 0)).collect();
        let taken = take_request(&mut buffer, 3, false, &Holds::default(), 0);
        assert_eq!((ids(&taken), left(&buffer)), (vec![1, 2, 3], vec![4, 5]));
        let taken = take_request(&mut buffer, 3, false, &Holds::default(), 0);
        assert_eq!((ids(&taken), left(&buffer)), (vec![4, 5], vec![]));
        assert!(take_request(&mut buffer, 3, false, &Holds::default(), 0).is_empty());
    }

    #[test]
    fn a_request_carries_one_lane_and_the_others_keep_their_place() {
        // GA4: clients 7 and 8 interleaved.
        let mut buffer: VecDeque<Held> = [(1, 7), (2, 8), (3, 7), (4, 8), (5, 7)]
            .into_iter()
            .map(|(id, client)| held(id, "collect", client))
            .collect();
        let taken = take_request(&mut buffer, 25, false, &Holds::default(), 0);
        assert_eq!((ids(&taken), left(&buffer)), (vec![1, 3, 5], vec![2, 4]));
        let taken = take_request(&mut buffer, 1, false, &Holds::default(), 0);
        assert_eq!((ids(&taken), left(&buffer)), (vec![2], vec![4]));
    }

    #[test]
    fn a_solo_item_and_a_probe_go_alone() {
        let mut buffer: VecDeque<Held> = (1..=3).map(|id| held(id, "", 0)).collect();
        buffer[0].item.solo = true;
        let taken = take_request(&mut buffer, 10, false, &Holds::default(), 0);
        assert_eq!(ids(&taken), [1]);
        let taken = take_request(&mut buffer, 10, true, &Holds::default(), 0);
        assert_eq!((ids(&taken), left(&buffer)), (vec![2], vec![3]));
        // A solo item behind the front is not swept into a batch.
        let mut buffer: VecDeque<Held> = (1..=3).map(|id| held(id, "", 0)).collect();
        buffer[1].item.solo = true;
        let taken = take_request(&mut buffer, 10, false, &Holds::default(), 0);
        assert_eq!((ids(&taken), left(&buffer)), (vec![1, 3], vec![2]));
    }

    #[test]
    fn a_held_endpoint_waits_and_the_others_go_on() {
        // Klaviyo answered 429 for profiles: events still go.
        let mut buffer: VecDeque<Held> = [(1, "profiles"), (2, "events"), (3, "profiles")]
            .into_iter()
            .map(|(id, endpoint)| held(id, endpoint, 0))
            .collect();
        let mut holds = Holds::default();
        holds.hold("profiles", 5_000);
        let taken = take_request(&mut buffer, 10, false, &holds, 1_000);
        assert_eq!((ids(&taken), left(&buffer)), (vec![2], vec![1, 3]));
        assert!(take_request(&mut buffer, 10, false, &holds, 1_000).is_empty());
        assert_eq!(holds.next_free_ms(1_000), Some(5_000));
        let taken = take_request(&mut buffer, 10, false, &holds, 5_000);
        assert_eq!(ids(&taken), [1, 3]);
        assert_eq!(holds.next_free_ms(5_000), None);
    }

    #[test]
    fn only_leases_ending_soon_are_renewed() {
        let mut buffer: VecDeque<Held> = (1..=3).map(|id| held(id, "", 0)).collect();
        buffer[1].lease_until_ms = 9_000;
        assert_eq!(renew(&mut buffer, 5_000, 20_000), vec![1, 3]);
        assert!(buffer.iter().all(|h| h.lease_until_ms >= 9_000));
        assert!(renew(&mut buffer, 5_000, 20_000).is_empty());
    }
}
