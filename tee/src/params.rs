//! The parameters a trusted application sees: four GlobalPlatform-style
//! slots, values and private copies of memory references.

use alloc::vec::Vec;

use crate::error::TeeError;
use crate::msg::Direction;

/// The type of one TA parameter (`TEE_PARAM_TYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamType {
    /// `TEE_PARAM_TYPE_NONE`.
    None,
    /// `TEE_PARAM_TYPE_VALUE_INPUT`.
    ValueInput,
    /// `TEE_PARAM_TYPE_VALUE_OUTPUT`.
    ValueOutput,
    /// `TEE_PARAM_TYPE_VALUE_INOUT`.
    ValueInout,
    /// `TEE_PARAM_TYPE_MEMREF_INPUT`.
    MemrefInput,
    /// `TEE_PARAM_TYPE_MEMREF_OUTPUT`.
    MemrefOutput,
    /// `TEE_PARAM_TYPE_MEMREF_INOUT`.
    MemrefInout,
}

/// A memory reference as the TA sees it: a private copy, never guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Memref {
    dir: Direction,
    data: Vec<u8>,
    capacity: usize,
    required: usize,
}

impl Memref {
    /// A memref with `data` copied in (empty for output) and the client's
    /// buffer size `capacity`.
    pub fn new(dir: Direction, data: Vec<u8>, capacity: usize) -> Memref {
        Memref {
            dir,
            data,
            capacity,
            required: 0,
        }
    }

    /// Direction.
    pub fn dir(&self) -> Direction {
        self.dir
    }

    /// The bytes: the input copy, or what the TA produced.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The client's buffer size.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The size the TA asked for after a [`TeeError::ShortBuffer`].
    pub fn required(&self) -> usize {
        self.required
    }
}

/// One TA parameter slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaParam {
    /// Unused.
    None,
    /// A value pair (GlobalPlatform values are 32-bit).
    Value {
        /// Direction.
        dir: Direction,
        /// `a`.
        a: u32,
        /// `b`.
        b: u32,
    },
    /// A memory reference.
    Memref(Memref),
}

impl TaParam {
    /// The slot's type.
    pub fn param_type(&self) -> ParamType {
        match self {
            TaParam::None => ParamType::None,
            TaParam::Value { dir, .. } => match dir {
                Direction::Input => ParamType::ValueInput,
                Direction::Output => ParamType::ValueOutput,
                Direction::InOut => ParamType::ValueInout,
            },
            TaParam::Memref(m) => match m.dir {
                Direction::Input => ParamType::MemrefInput,
                Direction::Output => ParamType::MemrefOutput,
                Direction::InOut => ParamType::MemrefInout,
            },
        }
    }
}

/// The four parameter slots of an open or invoke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    slots: [TaParam; 4],
}

impl Default for Params {
    fn default() -> Params {
        Params {
            slots: [TaParam::None, TaParam::None, TaParam::None, TaParam::None],
        }
    }
}

impl Params {
    /// From four slots.
    pub fn new(slots: [TaParam; 4]) -> Params {
        Params { slots }
    }

    /// The four types.
    pub fn types(&self) -> [ParamType; 4] {
        [
            self.slots[0].param_type(),
            self.slots[1].param_type(),
            self.slots[2].param_type(),
            self.slots[3].param_type(),
        ]
    }

    /// [`TeeError::BadParameters`] unless the types are exactly `expected`
    /// (the GlobalPlatform idiom every TA command starts with).
    pub fn expect(&self, expected: [ParamType; 4]) -> Result<(), TeeError> {
        if self.types() == expected {
            Ok(())
        } else {
            Err(TeeError::BadParameters)
        }
    }

    /// The slot `i`.
    pub fn get(&self, i: usize) -> Option<&TaParam> {
        self.slots.get(i)
    }

    /// The slots.
    pub fn slots(&self) -> &[TaParam; 4] {
        &self.slots
    }

    /// The input value of slot `i` (`ValueInput` or `ValueInout`).
    pub fn value(&self, i: usize) -> Result<(u32, u32), TeeError> {
        match self.slots.get(i) {
            Some(TaParam::Value { dir, a, b }) if dir.is_input() => Ok((*a, *b)),
            _ => Err(TeeError::BadParameters),
        }
    }

    /// Sets the output value of slot `i` (`ValueOutput` or `ValueInout`).
    pub fn set_value(&mut self, i: usize, a: u32, b: u32) -> Result<(), TeeError> {
        match self.slots.get_mut(i) {
            Some(TaParam::Value { dir, a: sa, b: sb }) if dir.is_output() => {
                *sa = a;
                *sb = b;
                Ok(())
            }
            _ => Err(TeeError::BadParameters),
        }
    }

    /// The input bytes of slot `i` (`MemrefInput` or `MemrefInout`).
    pub fn memref(&self, i: usize) -> Result<&[u8], TeeError> {
        match self.slots.get(i) {
            Some(TaParam::Memref(m)) if m.dir.is_input() => Ok(&m.data),
            _ => Err(TeeError::BadParameters),
        }
    }

    /// The client buffer size of slot `i` (any memref).
    pub fn capacity(&self, i: usize) -> Result<usize, TeeError> {
        match self.slots.get(i) {
            Some(TaParam::Memref(m)) => Ok(m.capacity),
            _ => Err(TeeError::BadParameters),
        }
    }

    /// [`TeeError::ShortBuffer`] (recording `n` as the required size) if the
    /// output memref `i` holds fewer than `n` bytes. TAs call this before any
    /// side effect, so a short buffer never loses a result.
    pub fn require(&mut self, i: usize, n: usize) -> Result<(), TeeError> {
        match self.slots.get_mut(i) {
            Some(TaParam::Memref(m)) if m.dir.is_output() => {
                if n > m.capacity {
                    m.required = n;
                    Err(TeeError::ShortBuffer)
                } else {
                    Ok(())
                }
            }
            _ => Err(TeeError::BadParameters),
        }
    }

    /// Sets the output bytes of memref `i`; [`TeeError::ShortBuffer`] if they
    /// do not fit.
    pub fn set_memref(&mut self, i: usize, data: &[u8]) -> Result<(), TeeError> {
        self.require(i, data.len())?;
        match self.slots.get_mut(i) {
            Some(TaParam::Memref(m)) => {
                m.data.clear();
                m.data.extend_from_slice(data);
                Ok(())
            }
            _ => Err(TeeError::BadParameters),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn accessors_check_types_and_capacity() {
        let mut p = Params::new([
            TaParam::Value {
                dir: Direction::Input,
                a: 1,
                b: 2,
            },
            TaParam::Memref(Memref::new(Direction::Output, vec![], 4)),
            TaParam::Memref(Memref::new(Direction::Input, vec![9], 1)),
            TaParam::None,
        ]);
        assert_eq!(p.value(0), Ok((1, 2)));
        assert_eq!(p.set_value(0, 1, 1), Err(TeeError::BadParameters));
        assert_eq!(p.memref(1), Err(TeeError::BadParameters));
        assert_eq!(p.memref(2), Ok(&[9u8][..]));
        assert_eq!(
            p.set_memref(1, &[1, 2, 3, 4, 5]),
            Err(TeeError::ShortBuffer)
        );
        match p.get(1) {
            Some(TaParam::Memref(m)) => assert_eq!(m.required(), 5),
            _ => unreachable!(),
        }
        assert_eq!(p.set_memref(1, &[1, 2, 3, 4]), Ok(()));
        assert_eq!(p.set_memref(2, &[1]), Err(TeeError::BadParameters));
        assert_eq!(p.value(7), Err(TeeError::BadParameters));
        assert_eq!(
            p.expect([
                ParamType::ValueInput,
                ParamType::MemrefOutput,
                ParamType::MemrefInput,
                ParamType::None
            ]),
            Ok(())
        );
        assert_eq!(p.expect([ParamType::None; 4]), Err(TeeError::BadParameters));
    }
}
