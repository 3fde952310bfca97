//! The one key table: it binds the keys, writes the help overlay and the footer of the focused
//! pane's keys, so what a key does and what the screen says it does cannot drift apart.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::Pane;

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    Pane(usize),
    NextPane,
    PreviousPane,
    Down,
    Up,
    PageDown,
    PageUp,
    Open,
    Close,
    Filter,
    Search,
    Follow,
    Newest,
    Oldest,
    NextTab,
    PreviousTab,
    Theme,
    SendNext,
    NextStage,
    NewRun,
    RetryNow,
    ReplayDead,
    PauseResume,
    AllowReplay,
    Copy,
    /// Scroll what is shown beside the list (the collision side-by-side; pane 3).
    ContentDown,
    ContentUp,
    /// Pane 4: preview a draft mapping table against the stored traffic.
    PreviewDraft,
    /// Pane 4: put the previewed draft in force.
    ActivateDraft,
}

/// Where a key means something (for the footer; the binding itself holds everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every pane, and shown in every footer.
    Everywhere,
    /// Every pane, shown only in the help (pane numbers, themes).
    Quiet,
    /// The panes listed.
    On(&'static [Pane]),
}

/// One binding: the keys, how the help and the footer name them, what it does and where.
pub struct Key {
    pub codes: &'static [KeyCode],
    /// As the help shows the keys ("j / ↓").
    pub keys: &'static str,
    /// As the footer shows it, short ("move").
    pub short: &'static str,
    /// As the help explains it.
    pub what: &'static str,
    pub action: Action,
    pub scope: Scope,
}

const LISTS: &[Pane] = &[
    Pane::Stream,
    Pane::Deliveries,
    Pane::Unmapped,
    Pane::Destinations,
    Pane::Collisions,
    Pane::Profiles,
    Pane::Alerts,
];
const TIMELINES: &[Pane] = &[
    Pane::Stream,
    Pane::Deliveries,
    Pane::Unmapped,
    Pane::Collisions,
    Pane::Alerts,
];
const OPENS: &[Pane] = &[
    Pane::Stream,
    Pane::Deliveries,
    Pane::Unmapped,
    Pane::Collisions,
    Pane::Profiles,
    Pane::TestSend,
];

const fn key(
    codes: &'static [KeyCode],
    keys: &'static str,
    short: &'static str,
    what: &'static str,
    action: Action,
    scope: Scope,
) -> Key {
    Key {
        codes,
        keys,
        short,
        what,
        action,
        scope,
    }
}

use KeyCode::{BackTab, Char, Down, End, Enter, Esc, Home, Left, PageDown, PageUp, Right, Tab, Up};

/// Every key of the dashboard, in the order the help lists them.
pub const KEYS: &[Key] = &[
    key(&[Char('1')], "1", "", "live stream", Action::Pane(0), Scope::Quiet),
    key(&[Char('2')], "2", "", "delivery attempts", Action::Pane(1), Scope::Quiet),
    key(&[Char('3')], "3", "", "raw vs canonical diff", Action::Pane(2), Scope::Quiet),
    key(&[Char('4')], "4", "", "unmapped events", Action::Pane(3), Scope::Quiet),
    key(&[Char('5')], "5", "", "destination diagnostics", Action::Pane(4), Scope::Quiet),
    key(&[Char('6')], "6", "", "dedup collisions", Action::Pane(5), Scope::Quiet),
    key(&[Char('7')], "7", "", "profiles", Action::Pane(6), Scope::Quiet),
    key(&[Char('8')], "8", "", "controlled test send", Action::Pane(7), Scope::Quiet),
    key(&[Char('9')], "9", "", "alerts: firing and history; forget requests", Action::Pane(8), Scope::Quiet),
    key(&[Tab], "tab", "", "next pane", Action::NextPane, Scope::Quiet),
    key(&[BackTab], "shift-tab", "", "previous pane", Action::PreviousPane, Scope::Quiet),
    key(&[Char('j'), Down], "j / ↓", "move", "select the next row (pane 3: scroll down)", Action::Down, Scope::On(LISTS)),
    key(&[Char('k'), Up], "k / ↑", "", "select the previous row (pane 3: scroll up)", Action::Up, Scope::Quiet),
    key(&[Char('j'), Down], "j / ↓", "scroll", "scroll the raw message and what it became", Action::Down, Scope::On(&[Pane::Diff])),
    key(&[PageDown], "pgdn", "", "ten rows down (pane 3: a page)", Action::PageDown, Scope::Quiet),
    key(&[PageUp], "pgup", "", "ten rows up (pane 3: a page)", Action::PageUp, Scope::Quiet),
    key(&[Char('g'), Home], "g / home", "newest", "newest row, and follow (pane 3: the top)", Action::Newest, Scope::On(TIMELINES)),
    key(&[Char('G'), End], "G / end", "oldest", "oldest row, the whole history (pane 3: the end)", Action::Oldest, Scope::On(TIMELINES)),
    key(&[Enter], "enter", "open", "open: trace the message / show the request and response / a collision as it was", Action::Open, Scope::On(OPENS)),
    key(&[Esc], "esc", "back", "close the detail; on pane 3 back to the row you came from; clear the filter", Action::Close, Scope::Everywhere),
    key(&[Char('/')], "/", "filter", "filter this pane (see the filter syntax below); test send: the test user", Action::Filter, Scope::On(LISTS)),
    key(&[Char(':')], ":", "search", "search all history: messageId, event_id, request id, order_id, userId, anonymousId, email, phone", Action::Search, Scope::Everywhere),
    key(&[Char('f')], "f", "follow/pause", "follow new rows / pause this pane (the selection stays on its row)", Action::Follow, Scope::On(TIMELINES)),
    key(&[Left, Char('h')], "← / h", "", "previous payload tab (pane 3)", Action::PreviousTab, Scope::Quiet),
    key(&[Right, Char('l')], "→ / l", "tabs", "next payload tab (pane 3)", Action::NextTab, Scope::On(&[Pane::Diff])),
    key(&[Char('J')], "J", "scroll", "scroll the collision side-by-side (and pane 3) down", Action::ContentDown, Scope::On(&[Pane::Collisions])),
    key(&[Char('K')], "K", "", "scroll the collision side-by-side (and pane 3) up", Action::ContentUp, Scope::Quiet),
    key(&[Char('m')], "m", "preview draft", "unmapped: preview a draft mapping table against the stored traffic (J/K move through its groups)", Action::PreviewDraft, Scope::On(&[Pane::Unmapped])),
    key(&[Char('a')], "a", "activate", "unmapped: put the previewed draft in force (asks first; running nodes reload it)", Action::ActivateDraft, Scope::On(&[Pane::Unmapped])),
    key(&[Char('c')], "c", "copy", "copy the raw message JSON (pane 3, collisions)", Action::Copy, Scope::On(&[Pane::Diff, Pane::Collisions])),
    key(&[Char('s')], "s", "send", "test send: send the next call", Action::SendNext, Scope::On(&[Pane::TestSend])),
    key(&[Char(' '), Char('n')], "space / n", "next stage", "test send: reveal the next stage", Action::NextStage, Scope::On(&[Pane::TestSend])),
    key(&[Char('r')], "r", "new run", "test send: start a new run", Action::NewRun, Scope::On(&[Pane::TestSend])),
    key(&[Char('R')], "R", "retry now", "attempts: send the selected delivery again now (asks first)", Action::RetryNow, Scope::On(&[Pane::Deliveries])),
    key(&[Char('D')], "D", "replay dead", "destinations: put the selected destination's dead letters back in line (asks first)", Action::ReplayDead, Scope::On(&[Pane::Destinations])),
    key(&[Char('p')], "p", "pause/resume", "destinations: pause / resume the selected destination (asks first)", Action::PauseResume, Scope::On(&[Pane::Destinations])),
    key(&[Char('A')], "A", "allow replay", "stream: let repeated event_ids of the selected row's environment through for 60 minutes (asks first)", Action::AllowReplay, Scope::On(&[Pane::Stream])),
    key(&[Char('t')], "t", "", "next theme", Action::Theme, Scope::Quiet),
    key(&[Char('?')], "?", "help", "this help (any key closes it)", Action::Help, Scope::Everywhere),
    key(&[Char('q')], "q", "quit", "quit (ctrl-c too)", Action::Quit, Scope::Everywhere),
];

/// What a key does in an open detail (an attempt's request and response, a refused request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailAction {
    Down,
    Up,
    PageDown,
    PageUp,
    Top,
    Bottom,
    Response,
    Wrap,
    Curl,
    Copy,
    Close,
}

pub struct DetailKey {
    pub codes: &'static [KeyCode],
    pub keys: &'static str,
    pub short: &'static str,
    pub what: &'static str,
    pub action: DetailAction,
}

/// The keys of an open detail: they scroll it and act on it, never on the list behind it.
pub const DETAIL_KEYS: &[DetailKey] = &[
    DetailKey {
        codes: &[Char('j'), Down],
        keys: "j / ↓",
        short: "scroll",
        what: "scroll a line down",
        action: DetailAction::Down,
    },
    DetailKey {
        codes: &[Char('k'), Up],
        keys: "k / ↑",
        short: "",
        what: "scroll a line up",
        action: DetailAction::Up,
    },
    DetailKey {
        codes: &[PageDown, Char(' ')],
        keys: "pgdn / space",
        short: "page",
        what: "a page down",
        action: DetailAction::PageDown,
    },
    DetailKey {
        codes: &[PageUp],
        keys: "pgup",
        short: "",
        what: "a page up",
        action: DetailAction::PageUp,
    },
    DetailKey {
        codes: &[Char('g'), Home],
        keys: "g / home",
        short: "",
        what: "the top",
        action: DetailAction::Top,
    },
    DetailKey {
        codes: &[Char('G'), End],
        keys: "G / end",
        short: "",
        what: "the end",
        action: DetailAction::Bottom,
    },
    DetailKey {
        codes: &[Char('r')],
        keys: "r",
        short: "response",
        what: "jump to the response",
        action: DetailAction::Response,
    },
    DetailKey {
        codes: &[Char('w')],
        keys: "w",
        short: "wrap",
        what: "wrap long lines / cut them",
        action: DetailAction::Wrap,
    },
    DetailKey {
        codes: &[Char('y')],
        keys: "y",
        short: "curl",
        what: "copy the request as a curl command (secrets stay REDACTED)",
        action: DetailAction::Curl,
    },
    DetailKey {
        codes: &[Char('c')],
        keys: "c",
        short: "copy",
        what: "copy the body",
        action: DetailAction::Copy,
    },
    DetailKey {
        codes: &[Esc, Enter],
        keys: "esc / enter",
        short: "close",
        what: "close the detail",
        action: DetailAction::Close,
    },
];

/// The filter syntax, for the help.
pub const FILTER_HELP: &[(&str, &str)] = &[
    ("text", "matches the event, the destination, the status, an id or the reason"),
    ("dest:meta", "one destination (attempts, destinations)"),
    ("status:dead", "stored status or outcome: accepted duplicate invalid rejected · mapped unmapped identify collision · delivered retry dead"),
    ("event:purchase", "the Segment or canonical event name"),
    ("env:production", "one environment"),
    ("type:identify", "one call type"),
    ("http:401", "one HTTP status (attempts)"),
    ("id:seg_…", "a messageId, event_id or request id"),
    ("a b", "every word must match (dest:meta status:retry)"),
];

pub fn action_for(key: &KeyEvent) -> Option<Action> {
    if key.code == Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
        return Some(Action::Quit);
    }
    KEYS.iter()
        .find(|k| k.codes.contains(&key.code))
        .map(|k| k.action)
}

pub fn detail_action_for(key: &KeyEvent) -> Option<DetailAction> {
    DETAIL_KEYS
        .iter()
        .find(|k| k.codes.contains(&key.code))
        .map(|k| k.action)
}

/// The focused view's keys, short: "j move · enter open · / filter · … · ? help · q quit".
pub fn footer_keys(pane: Pane, detail: bool) -> Vec<(&'static str, &'static str)> {
    if detail {
        return DETAIL_KEYS
            .iter()
            .filter(|k| !k.short.is_empty())
            .map(|k| (k.keys, k.short))
            .collect();
    }
    KEYS.iter()
        .filter(|k| !k.short.is_empty())
        .filter(|k| match k.scope {
            Scope::Everywhere => true,
            Scope::Quiet => false,
            Scope::On(panes) => panes.contains(&pane),
        })
        .map(|k| (k.keys, k.short))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_bound_once_and_named() {
        let mut seen: Vec<(KeyCode, Action)> = Vec::new();
        for k in KEYS {
            for code in k.codes {
                // A key listed twice must do the same thing both times (j is "move" on lists
                // and "scroll" on pane 3: one binding, two footers).
                if let Some((_, action)) = seen.iter().find(|(c, _)| c == code) {
                    assert_eq!(*action, k.action, "{code:?} bound to two actions");
                }
                seen.push((*code, k.action));
            }
            assert!(!k.what.is_empty());
        }
        let d = KeyEvent::new(Char('D'), KeyModifiers::NONE);
        assert_eq!(action_for(&d), Some(Action::ReplayDead));
    }

    #[test]
    fn each_pane_footer_names_its_own_keys() {
        let words =
            |pane| -> Vec<&str> { footer_keys(pane, false).iter().map(|(_, w)| *w).collect() };
        assert!(words(Pane::Deliveries).contains(&"retry now"));
        assert!(!words(Pane::Stream).contains(&"retry now"));
        assert!(words(Pane::Destinations).contains(&"replay dead"));
        assert!(words(Pane::Diff).contains(&"scroll"));
        assert!(words(Pane::TestSend).contains(&"send"));
        let detail: Vec<&str> = footer_keys(Pane::Deliveries, true)
            .iter()
            .map(|(_, w)| *w)
            .collect();
        assert!(
            detail.contains(&"response") && detail.contains(&"curl") && detail.contains(&"wrap")
        );
    }
}
