//! Every event shape ever written to the log still loads into today's event types.
//!
//! `tests/fixtures/events/<AggregateType>/<EventType>@<version>.json` holds one stored
//! payload (exactly what cqrs-es writes: `serde_json::to_value` of the event) for every
//! version of every event type. Each is read the two ways the system reads the log — the
//! projections lift it with [`upcast::upcast`] and decode it, cqrs-es runs it through
//! [`LogUpcaster`] and decodes it into an `EventEnvelope` — and both must give the event the
//! file names, in the current shape.
//!
//! The fixtures are hand-checked files, never regenerated: a fixture is what an older
//! release really wrote. When an event's shape changes, keep its old fixture, add a
//! [`Step`](domain::upcast::Step) to `STEPS` and a fixture of the new version; a new event
//! type needs a fixture at its version. The coverage tests below find the variants of
//! every event enum through serde itself, so nothing here lists them by hand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope};
use serde::de::DeserializeOwned;
use serde_json::Value;

use domain::agent::AgentStatus;
use domain::assignment::AssignmentDecision;
use domain::bot::Bot;
use domain::channel::ChannelConfig;
use domain::conversation::Conversation;
use domain::customer::CustomerPrivacy;
use domain::division::{AssignmentAlgorithm, Division};
use domain::notification::{Inbox, Notification};
use domain::pipeline::{Card, OrganizationPipelines};
use domain::queue_settings::OrganizationQueue;
use domain::ticket::{AssignmentVia, Ticket, TicketEvent};
use domain::upcast::{self, current_version, LogUpcaster, STEPS};

/// Where the fixtures live, as the failure messages name it.
const FIXTURES_DIR: &str = "domain/tests/fixtures/events";

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events")
}

/// The path of the fixture of `event_type` at `version`, relative to the workspace.
fn fixture_name(aggregate_type: &str, event_type: &str, version: &str) -> String {
    format!("{FIXTURES_DIR}/{aggregate_type}/{event_type}@{version}.json")
}

// ---------------------------------------------------------------------------------------
// The aggregates and their event types.
// ---------------------------------------------------------------------------------------

/// An event as a reader decoded it and would write it again.
#[derive(Debug, Clone, PartialEq)]
struct Decoded {
    /// `DomainEvent::event_type` of the decoded event.
    event_type: String,
    /// `DomainEvent::event_version` of the decoded event.
    event_version: String,
    /// The decoded event serialized again.
    payload: Value,
}

/// How the events of one aggregate type are read.
struct Codec {
    /// `Aggregate::TYPE`, the name of the fixtures' folder.
    aggregate_type: &'static str,
    /// Decodes a payload already in the current shape (the projections' way).
    decode: fn(Value) -> Result<Decoded, String>,
    /// Loads a stored event the way cqrs-es does: through the upcasters, then into an
    /// `EventEnvelope`. Gives the event as the upcasters left it and the decoded one.
    load: fn(SerializedEvent) -> Result<(SerializedEvent, Decoded), String>,
    /// The names of the event enum's variants, as serde knows them.
    variants: fn() -> Result<Vec<&'static str>, String>,
}

impl Codec {
    fn of<A: Aggregate>() -> Self {
        Codec {
            aggregate_type: A::TYPE,
            decode: decode::<A::Event>,
            load: load::<A>,
            variants: variant_names::<A::Event>,
        }
    }
}

/// Every aggregate whose events are stored.
fn codecs() -> Vec<Codec> {
    vec![
        Codec::of::<Ticket>(),
        Codec::of::<AgentStatus>(),
        Codec::of::<Division>(),
        Codec::of::<OrganizationQueue>(),
        Codec::of::<Conversation>(),
        Codec::of::<ChannelConfig>(),
        Codec::of::<Bot>(),
        Codec::of::<Notification>(),
        Codec::of::<Inbox>(),
        Codec::of::<OrganizationPipelines>(),
        Codec::of::<Card>(),
        Codec::of::<CustomerPrivacy>(),
    ]
}

/// The codec of the aggregate type a fixture's folder names.
fn codec(aggregate_type: &str) -> Option<Codec> {
    codecs()
        .into_iter()
        .find(|codec| codec.aggregate_type == aggregate_type)
}

fn decoded<E: DomainEvent>(event: &E) -> Result<Decoded, String> {
    Ok(Decoded {
        event_type: event.event_type(),
        event_version: event.event_version(),
        payload: serde_json::to_value(event).map_err(|e| format!("serializing again: {e}"))?,
    })
}

fn decode<E: DomainEvent>(payload: Value) -> Result<Decoded, String> {
    let event: E = serde_json::from_value(payload).map_err(|e| e.to_string())?;
    decoded(&event)
}

fn load<A: Aggregate>(stored: SerializedEvent) -> Result<(SerializedEvent, Decoded), String> {
    // What cqrs-es does with the upcasters it is given, in order, before decoding.
    let upcasters: Vec<Box<dyn EventUpcaster>> = vec![Box::new(LogUpcaster)];
    let lifted = upcasters.iter().fold(stored, |event, upcaster| {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            upcaster.upcast(event)
        } else {
            event
        }
    });
    let envelope = EventEnvelope::<A>::try_from(lifted.clone()).map_err(|e| e.to_string())?;
    let again = SerializedEvent::try_from(&envelope).map_err(|e| e.to_string())?;
    Ok((
        lifted,
        Decoded {
            event_type: again.event_type,
            event_version: again.event_version,
            payload: again.payload,
        },
    ))
}

/// The variant names of an event enum, read from its `Deserialize` impl: a derived enum
/// hands serde the full list of its variants, which this deserializer captures.
fn variant_names<E: DeserializeOwned>() -> Result<Vec<&'static str>, String> {
    match E::deserialize(probe::VariantProbe) {
        Err(probe::Probe::Variants(names)) if !names.is_empty() => Ok(names.to_vec()),
        Err(probe::Probe::Variants(_)) => Err("the enum has no variants".into()),
        Err(probe::Probe::NotAnEnum(why)) => Err(why),
        Ok(_) => Err("the probe produced a value".into()),
    }
}

mod probe {
    use std::fmt;

    use serde::de::{self, Visitor};

    /// How the probe ends: with the variant names, or with why there are none.
    #[derive(Debug)]
    pub enum Probe {
        Variants(&'static [&'static str]),
        NotAnEnum(String),
    }

    impl fmt::Display for Probe {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Probe::Variants(names) => write!(f, "variants {names:?}"),
                Probe::NotAnEnum(why) => f.write_str(why),
            }
        }
    }

    impl std::error::Error for Probe {}

    impl de::Error for Probe {
        fn custom<T: fmt::Display>(msg: T) -> Self {
            Probe::NotAnEnum(msg.to_string())
        }
    }

    /// A deserializer that stops at `deserialize_enum` and reports the variants it is given.
    pub struct VariantProbe;

    impl<'de> de::Deserializer<'de> for VariantProbe {
        type Error = Probe;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Probe> {
            Err(Probe::NotAnEnum(
                "the type does not deserialize as an externally tagged enum".into(),
            ))
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            variants: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Probe> {
            Err(Probe::Variants(variants))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
            identifier ignored_any
        }
    }
}

// ---------------------------------------------------------------------------------------
// The fixtures.
// ---------------------------------------------------------------------------------------

/// One stored example and what its path says it is.
#[derive(Debug, Clone)]
struct Fixture {
    /// Relative to the workspace, for messages.
    name: String,
    aggregate_type: String,
    event_type: String,
    version: String,
    payload: Value,
}

/// Every fixture, sorted by path. Panics on anything in the folder that is not a readable
/// `<AggregateType>/<EventType>@<version>.json` holding JSON.
fn fixtures() -> Vec<Fixture> {
    let root = fixtures_root();
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let folders = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read {FIXTURES_DIR} ({}): {e}", root.display()));
    let mut folders: Vec<PathBuf> = folders.map(|entry| entry.unwrap().path()).collect();
    folders.sort();
    for folder in folders {
        let aggregate_type = file_name(&folder);
        if !folder.is_dir() {
            problems.push(format!(
                "{FIXTURES_DIR}/{aggregate_type}: expected only folders named after aggregate types"
            ));
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let shown = format!("{FIXTURES_DIR}/{aggregate_type}/{}", file_name(&file));
            let parsed = file_name(&file)
                .strip_suffix(".json")
                .and_then(|stem| stem.split_once('@'))
                .filter(|(event_type, version)| !event_type.is_empty() && !version.is_empty())
                .map(|(event_type, version)| (event_type.to_string(), version.to_string()));
            let Some((event_type, version)) = parsed.filter(|_| file.is_file()) else {
                problems.push(format!(
                    "{shown}: expected a file named <EventType>@<version>.json"
                ));
                continue;
            };
            let payload = std::fs::read_to_string(&file)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()));
            match payload {
                Ok(payload) => found.push(Fixture {
                    name: shown,
                    aggregate_type: aggregate_type.clone(),
                    event_type,
                    version,
                    payload,
                }),
                Err(e) => problems.push(format!("{shown}: not JSON: {e}")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(!found.is_empty(), "no fixtures under {FIXTURES_DIR}");
    found
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// The event type a stored payload is tagged with: `"TicketClosed"` for a unit variant,
/// the single key of `{"TicketCreated": {...}}` otherwise.
fn tag(payload: &Value) -> Option<&str> {
    match payload {
        Value::String(unit) => Some(unit),
        Value::Object(map) if map.len() == 1 => map.keys().next().map(String::as_str),
        _ => None,
    }
}

/// `value` with every `null` member of every object dropped: a missing optional field and a
/// `null` one read the same.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn stored(fixture: &Fixture) -> SerializedEvent {
    SerializedEvent {
        aggregate_id: "fixture".into(),
        sequence: 1,
        aggregate_type: fixture.aggregate_type.clone(),
        event_type: fixture.event_type.clone(),
        event_version: fixture.version.clone(),
        payload: fixture.payload.clone(),
        metadata: Value::Object(Default::default()),
    }
}

/// Reads one fixture both ways; `Err` says what is wrong with it.
fn check(fixture: &Fixture) -> Result<(), String> {
    let Some(codec) = codec(&fixture.aggregate_type) else {
        return Err(format!(
            "no aggregate has the type {:?} (known: {:?})",
            fixture.aggregate_type,
            codecs()
                .iter()
                .map(|c| c.aggregate_type)
                .collect::<Vec<_>>()
        ));
    };
    let event_type = fixture.event_type.as_str();
    let current = current_version(event_type);
    if tag(&fixture.payload) != Some(event_type) {
        return Err(format!(
            "the payload is not tagged {event_type:?} (a stored event is \"{event_type}\" or \
             {{\"{event_type}\": {{...}}}})"
        ));
    }

    // The projections' way.
    let lifted = upcast::upcast(event_type, &fixture.version, fixture.payload.clone())
        .map_err(|e| format!("upcast refused it: {e}"))?;
    let by_projection = (codec.decode)(lifted.clone()).map_err(|e| {
        format!(
            "does not decode into the {} events after upcasting: {e}",
            codec.aggregate_type
        )
    })?;

    // cqrs-es's way.
    let (after_upcasters, by_cqrs) = (codec.load)(stored(fixture))
        .map_err(|e| format!("cqrs-es cannot load it through LogUpcaster: {e}"))?;
    if after_upcasters.payload != lifted {
        return Err(format!(
            "LogUpcaster and upcast() disagree:\n  LogUpcaster: {}\n  upcast():    {lifted}",
            after_upcasters.payload
        ));
    }
    if after_upcasters.event_version != current {
        return Err(format!(
            "LogUpcaster left it at version {} instead of the current {current}",
            after_upcasters.event_version
        ));
    }
    if by_projection != by_cqrs {
        return Err(format!(
            "the two readers decode it differently:\n  upcast():    {by_projection:?}\n  \
             LogUpcaster: {by_cqrs:?}"
        ));
    }

    if by_cqrs.event_type != event_type {
        return Err(format!(
            "it decodes into an event whose event_type() is {:?}",
            by_cqrs.event_type
        ));
    }
    if by_cqrs.event_version != current {
        return Err(format!(
            "the decoded event says version {} but current_version({event_type}) is {current}",
            by_cqrs.event_version
        ));
    }

    // Nothing may be lost or renamed on the way: written again, the event is the payload
    // it was read from (an old one as its upcasters lifted it, where an absent optional
    // field and a null one are the same).
    let (written, read) = if fixture.version == current {
        (by_cqrs.payload.clone(), lifted)
    } else {
        (without_nulls(&by_cqrs.payload), without_nulls(&lifted))
    };
    if written != read {
        return Err(format!(
            "decoding loses or renames something (a field renamed, removed or given a default \
             in the event type without a Step in domain/src/upcast.rs?):\n  read:    {read}\n  \
             written: {written}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------

#[test]
fn every_fixture_loads_into_the_current_event_types() {
    let failures: Vec<String> = fixtures()
        .iter()
        .filter_map(|fixture| {
            check(fixture).err().map(|why| {
                format!(
                    "{} ({} {} v{}): {why}",
                    fixture.name, fixture.aggregate_type, fixture.event_type, fixture.version
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} stored event(s) no longer load. A fixture is what an older release wrote: fix \
         the event type or add an upcaster step, never the fixture.\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_event_type_has_a_fixture_at_its_current_version() {
    let root = fixtures_root();
    let mut missing = Vec::new();
    for codec in codecs() {
        let variants = (codec.variants)()
            .unwrap_or_else(|e| panic!("cannot list the {} events: {e}", codec.aggregate_type));
        for event_type in variants {
            let version = current_version(event_type);
            let path = root
                .join(codec.aggregate_type)
                .join(format!("{event_type}@{version}.json"));
            if !path.is_file() {
                missing.push(format!(
                    "missing fixture for {} event {event_type} at its current version {version}: \
                     add {} holding the payload cqrs-es stores for a realistic {event_type} \
                     (serde_json::to_value of the event)",
                    codec.aggregate_type,
                    fixture_name(codec.aggregate_type, event_type, version)
                ));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn every_upcaster_step_has_a_fixture_of_the_version_it_reads() {
    let root = fixtures_root();
    let owners = event_type_owners();
    let mut missing = Vec::new();
    for step in STEPS {
        let Some(owner) = owners.get(step.event_type) else {
            missing.push(format!(
                "STEPS lifts {} {} -> {}, but no aggregate has an event of that type",
                step.event_type, step.from, step.to
            ));
            continue;
        };
        let path = root
            .join(owner)
            .join(format!("{}@{}.json", step.event_type, step.from));
        if !path.is_file() {
            missing.push(format!(
                "missing fixture for {owner} event {} at version {} (STEPS lifts it to {}): add \
                 {} holding a payload exactly as the releases writing {} stored it",
                step.event_type,
                step.from,
                step.to,
                fixture_name(owner, step.event_type, step.from),
                step.from
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// Which aggregate type each event type belongs to.
fn event_type_owners() -> BTreeMap<&'static str, &'static str> {
    let mut owners = BTreeMap::new();
    for codec in codecs() {
        for event_type in (codec.variants)().unwrap() {
            owners.insert(event_type, codec.aggregate_type);
        }
    }
    owners
}

#[test]
fn event_type_names_are_unique_across_aggregates() {
    // Versions and upcasters are keyed by the event type alone.
    let mut owners: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for codec in codecs() {
        for event_type in (codec.variants)().unwrap() {
            owners
                .entry(event_type)
                .or_default()
                .push(codec.aggregate_type);
        }
    }
    let shared: Vec<String> = owners
        .iter()
        .filter(|(_, aggregates)| aggregates.len() > 1)
        .map(|(event_type, aggregates)| format!("{event_type}: {aggregates:?}"))
        .collect();
    assert!(
        shared.is_empty(),
        "event types shared by aggregates (STEPS could not tell them apart): {shared:?}"
    );
}

#[test]
fn upcasting_a_fixture_at_its_current_version_changes_nothing() {
    let mut checked = 0;
    for fixture in fixtures() {
        if fixture.version != current_version(&fixture.event_type) {
            continue;
        }
        checked += 1;
        let lifted = upcast::upcast(
            &fixture.event_type,
            &fixture.version,
            fixture.payload.clone(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", fixture.name));
        assert_eq!(lifted, fixture.payload, "{}", fixture.name);
        assert!(
            !LogUpcaster.can_upcast(&fixture.event_type, &fixture.version),
            "{}: LogUpcaster wants to lift an event already at the current version",
            fixture.name
        );
    }
    assert!(checked > 0);
}

#[test]
fn old_fixtures_are_lifted_by_the_cqrs_upcaster() {
    let mut checked = 0;
    for fixture in fixtures() {
        if fixture.version == current_version(&fixture.event_type) {
            continue;
        }
        checked += 1;
        assert!(
            LogUpcaster.can_upcast(&fixture.event_type, &fixture.version),
            "{}: cqrs-es would load it without lifting it",
            fixture.name
        );
    }
    assert_eq!(checked, STEPS.len(), "one old fixture per step");
}

/// The Ticket fixture of `event_type` at `version`, lifted and decoded.
fn ticket_fixture(event_type: &str, version: &str) -> TicketEvent {
    let name = fixture_name(Ticket::TYPE, event_type, version);
    let fixture = fixtures()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {name}"));
    let lifted = upcast::upcast(event_type, version, fixture.payload)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_value(lifted).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn an_assignment_of_version_1_loads_without_a_decision() {
    let TicketEvent::TicketAssigned { via, decision, .. } = ticket_fixture("TicketAssigned", "1.0")
    else {
        panic!("TicketAssigned@1.0 is not a TicketAssigned");
    };
    assert_ne!(
        via,
        AssignmentVia::Auto,
        "1.0 fixture: a claim or an admin's choice"
    );
    assert_eq!(decision, None);
}

#[test]
fn an_assignment_of_version_2_keeps_its_decision() {
    let TicketEvent::TicketAssigned {
        agent_id,
        via,
        decision,
        ..
    } = ticket_fixture("TicketAssigned", "2.0")
    else {
        panic!("TicketAssigned@2.0 is not a TicketAssigned");
    };
    assert_eq!(via, AssignmentVia::Auto);
    let Some(AssignmentDecision {
        algorithm,
        considered,
        eligible,
        winner,
        ..
    }) = decision
    else {
        panic!("TicketAssigned@2.0 lost its decision");
    };
    assert_eq!(algorithm, AssignmentAlgorithm::LeastLoaded);
    assert_eq!(winner, agent_id);
    assert_eq!(considered.first().map(|c| &c.agent_id), Some(&agent_id));
    assert_eq!(considered.len(), eligible);
}
