//! One serde visitor for every raw struct (`raw.rs`), instead of one each.
//!
//! `#[derive(Deserialize)]` gives each struct its own visitor, and serde_norway
//! then compiles its mapping, option and key code once per visitor: about 4
//! KiB of machine code per struct, most of the YAML layer's size (measured in
//! bench/RESULTS.md). Here a struct only describes itself ([`Record`]: its
//! keys, its `expecting` text, and where each key's value goes), and the one
//! [`RecordVisitor`] fills it. Leaf values (strings, numbers, durations, the
//! custom visitors of `raw.rs`) still deserialize through their own
//! `Deserialize`, so their messages and positions are serde's, unchanged.
//!
//! Behaviour is the derive's with `deny_unknown_fields`: an unknown key is
//! `unknown field` at the key, a repeated key is `duplicate field`, a missing
//! key stays `None`, and a struct's `expecting` text is its own.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::raw::{
    Dur, List, RawCheckType, RawCommand, RawDep, RawEnv, RawEnvFile, RawFds, RawKind, RawPipe,
    RawRestart, RawRlimit, RawSvcFds, RlimitValue, ScalarText, Sig, Size, Umask,
};

/// A raw struct as the visitor sees it.
pub(super) trait Record {
    /// The YAML keys, in field order.
    fn names(&self) -> &'static [&'static str];
    /// The text of `expected ...` in a wrong-type message.
    fn expecting(&self) -> &'static str;
    /// Where the value of key `i` goes.
    fn field(&mut self, i: usize) -> Place<'_>;
}

/// An optional struct field (`Option<RawX>`), filled when the value is not null.
pub(super) trait OptRecord {
    fn fill(&mut self) -> &mut dyn Record;
}

impl<T: Record + Default> OptRecord for Option<T> {
    fn fill(&mut self) -> &mut dyn Record {
        self.get_or_insert_with(T::default)
    }
}

/// An optional list (`Option<List<T>>`) whose items are places themselves.
pub(super) trait ListSlot {
    /// Makes the list present (and empty).
    fn start(&mut self);
    /// A new null item at the end.
    fn push(&mut self) -> Option<Place<'_>>;
    /// Drops the last item (the one `push` made for the end of the list).
    fn pop(&mut self);
}

impl<T> ListSlot for Option<List<T>>
where
    Option<T>: AsPlace,
{
    fn start(&mut self) {
        *self = Some(Vec::new());
    }

    fn push(&mut self) -> Option<Place<'_>> {
        let v = self.as_mut()?;
        v.push(None);
        v.last_mut().map(AsPlace::place)
    }

    fn pop(&mut self) {
        if let Some(v) = self.as_mut() {
            v.pop();
        }
    }
}

impl<T> AsPlace for Option<List<T>>
where
    Option<T>: AsPlace,
{
    fn place(&mut self) -> Place<'_> {
        Place::List(self)
    }
}

/// Where one value goes: a leaf type, decoded by its own `Deserialize`, or
/// a struct or list of structs, decoded by the visitors below.
pub(super) enum Place<'a> {
    Str(&'a mut Option<String>),
    Bool(&'a mut Option<bool>),
    U32(&'a mut Option<u32>),
    U64(&'a mut Option<u64>),
    F64(&'a mut Option<f64>),
    Dur(&'a mut Option<Dur>),
    Size(&'a mut Option<Size>),
    Sig(&'a mut Option<Sig>),
    Umask(&'a mut Option<Umask>),
    Rlimit(&'a mut Option<RawRlimit>),
    RlimitValue(&'a mut Option<RlimitValue>),
    Kind(&'a mut Option<RawKind>),
    Restart(&'a mut Option<RawRestart>),
    CheckType(&'a mut Option<RawCheckType>),
    Command(&'a mut Option<RawCommand>),
    Env(&'a mut Option<RawEnv>),
    EnvFile(&'a mut Option<RawEnvFile>),
    Dep(&'a mut Option<RawDep>),
    Fds(&'a mut Option<RawFds>),
    SvcFds(&'a mut Option<RawSvcFds>),
    Pipe(&'a mut Option<RawPipe>),
    Text(&'a mut Option<ScalarText>),
    Record(&'a mut dyn OptRecord),
    List(&'a mut dyn ListSlot),
    /// Out of range (never for a key the visitor found).
    Ignore,
}

/// A field's `Place`.
pub(super) trait AsPlace {
    fn place(&mut self) -> Place<'_>;
}

macro_rules! leaf {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl AsPlace for Option<$t> {
            fn place(&mut self) -> Place<'_> {
                Place::$v(self)
            }
        })*
    };
}

leaf! {
    String => Str, bool => Bool, u32 => U32, u64 => U64, f64 => F64,
    Dur => Dur, Size => Size, Sig => Sig, Umask => Umask, RawRlimit => Rlimit, RlimitValue => RlimitValue,
    RawKind => Kind, RawRestart => Restart, RawCheckType => CheckType,
    RawCommand => Command, RawEnv => Env, RawEnvFile => EnvFile, RawDep => Dep,
    RawFds => Fds, RawSvcFds => SvcFds, RawPipe => Pipe, ScalarText => Text,
}

/// Describes a raw struct: `record!(Type, "expecting", { field: "key", ... })`.
/// Also makes `Option<Type>` and `Option<List<Type>>` places.
macro_rules! record {
    ($t:ident, $expecting:literal, { $($field:ident: $key:literal),* $(,)? }) => {
        impl super::record::Record for $t {
            fn names(&self) -> &'static [&'static str] {
                &[$($key),*]
            }
            fn expecting(&self) -> &'static str {
                $expecting
            }
            fn field(&mut self, i: usize) -> super::record::Place<'_> {
                use super::record::AsPlace;
                let mut n = 0usize;
                $(
                    if i == n {
                        return self.$field.place();
                    }
                    n += 1;
                )*
                let _ = n;
                super::record::Place::Ignore
            }
        }
        impl super::record::AsPlace for Option<$t> {
            fn place(&mut self) -> super::record::Place<'_> {
                super::record::Place::Record(self)
            }
        }
    };
}
pub(super) use record;

/// Deserializes a whole document as the record `T` (the top-level types).
pub(super) fn top<'de, D: Deserializer<'de>, T: Record + Default>(d: D) -> Result<T, D::Error> {
    let mut v = T::default();
    let names = v.names();
    d.deserialize_struct("", names, RecordVisitor(&mut v))?;
    Ok(v)
}

/// Fills `r` from a map a visitor already holds (`{soft, hard}`).
pub(super) fn fill<'de, A: MapAccess<'de>>(map: A, r: &mut dyn Record) -> Result<(), A::Error> {
    RecordVisitor(r).visit_map(map)
}

/// Fills one `Place`: every place is optional, so a null value stays
/// `None` (serde's `Option<T>`), and anything else is read by the value
/// type's own `Deserialize` or by the visitors here.
struct Seed<'a>(Place<'a>);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.0 {
            Place::Ignore => IgnoredAny::deserialize(d).map(|_| ()),
            place => d.deserialize_option(OptVisitor(place)),
        }
    }
}

/// serde's `OptionVisitor` (whose `expecting` is "option") for any place.
struct OptVisitor<'a>(Place<'a>);

impl<'de> Visitor<'de> for OptVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("option")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.0 {
            Place::Str(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Bool(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::U32(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::U64(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::F64(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Dur(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Size(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Sig(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Umask(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Rlimit(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::RlimitValue(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Kind(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Restart(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::CheckType(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Command(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Env(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::EnvFile(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Dep(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Fds(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::SvcFds(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Pipe(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Text(p) => *p = Some(Deserialize::deserialize(d)?),
            Place::Record(r) => {
                let r = r.fill();
                d.deserialize_struct("", r.names(), RecordVisitor(r))?;
            }
            Place::List(l) => {
                l.start();
                d.deserialize_seq(ListVisitor(l))?;
            }
            Place::Ignore => {
                IgnoredAny::deserialize(d)?;
            }
        }
        Ok(())
    }
}

/// A list; null items stay `None` (serde's `VecVisitor`).
struct ListVisitor<'a>(&'a mut dyn ListSlot);

impl<'de> Visitor<'de> for ListVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let Some(slot) = self.0.push() else {
                return Ok(());
            };
            if seq.next_element_seed(Seed(slot))?.is_none() {
                self.0.pop();
                return Ok(());
            }
        }
    }
}

/// One struct: keys by name, each value into its field.
struct RecordVisitor<'a>(&'a mut dyn Record);

impl<'de> Visitor<'de> for RecordVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0.expecting())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let names = self.0.names();
        let mut seen = 0u64;
        while let Some(i) = map.next_key_seed(Key(names))? {
            let bit = u32::try_from(i)
                .ok()
                .and_then(|s| 1u64.checked_shl(s))
                .unwrap_or(0);
            if seen & bit != 0 {
                return Err(de::Error::duplicate_field(
                    names.get(i).copied().unwrap_or(""),
                ));
            }
            seen |= bit;
            map.next_value_seed(Seed(self.0.field(i)))?;
        }
        Ok(())
    }
}

/// A key: its index in the names, or `unknown field` (derive's field
/// visitor, whose `expecting` is "field identifier").
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for Key {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("field identifier")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        self.0
            .iter()
            .position(|n| *n == v)
            .ok_or_else(|| E::unknown_field(v, self.0))
    }
}
