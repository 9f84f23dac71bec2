//! The spend-log columns bound as one-dimensional PostgreSQL arrays in the binary format
//! (`array_send`'s: dimensions, a has-nulls flag, the element type, length and lower bound 1,
//! then each element as its length, -1 for NULL, and its bytes), written in one pass into a
//! buffer made to size. tokio-postgres's own array parameters (`Vec<T>: ToSql`) encode each
//! element through a closure, a type check and a length written afterwards, into a buffer that
//! grows by doubling: about 1.5k instructions more per request for a flush's 17 columns
//! (callgrind, `benches/load/instructions.py --spend`). The bytes are the same
//! (`the_bytes_are_tokio_postgres_own` below).

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{to_sql_checked, IsNull, Kind, ToSql, Type};

/// A value that can be an array element.
pub trait Element: std::fmt::Debug + Sync {
    /// Its PostgreSQL type.
    const TYPE: Type;
    /// Its encoded length; `None` for NULL.
    fn size(&self) -> Option<usize>;
    /// Writes it (when not NULL) at the end of `out`, which has room.
    fn put(&self, out: &mut Vec<u8>);
}

impl Element for &str {
    const TYPE: Type = Type::TEXT;
    fn size(&self) -> Option<usize> {
        Some(self.len())
    }
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl Element for i64 {
    const TYPE: Type = Type::INT8;
    fn size(&self) -> Option<usize> {
        Some(8)
    }
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
}

impl Element for f64 {
    const TYPE: Type = Type::FLOAT8;
    fn size(&self) -> Option<usize> {
        Some(8)
    }
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_be_bytes());
    }
}

impl Element for bool {
    const TYPE: Type = Type::BOOL;
    fn size(&self) -> Option<usize> {
        Some(1)
    }
    fn put(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl<T: Element> Element for Option<T> {
    const TYPE: Type = T::TYPE;
    fn size(&self) -> Option<usize> {
        self.as_ref()?.size()
    }
    fn put(&self, out: &mut Vec<u8>) {
        if let Some(value) = self {
            value.put(out);
        }
    }
}

/// A slice bound as an array parameter.
#[derive(Debug)]
pub struct Array<'a, T>(pub &'a [T]);

impl<T: Element> ToSql for Array<'_, T> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let elements = self.0;
        let count = i32::try_from(elements.len())?;
        let mut body = 0;
        let mut has_null = false;
        for element in elements {
            match element.size() {
                Some(size) => body += 4 + size,
                None => {
                    body += 4;
                    has_null = true;
                }
            }
        }
        // Built in a `Vec` (whose fixed-size appends compile to plain stores; `BytesMut`'s go
        // through a call each), then appended in one copy.
        let mut array = Vec::with_capacity(20 + body);
        for word in [1, i32::from(has_null)] {
            array.extend_from_slice(&word.to_be_bytes()); // dimensions, has nulls
        }
        array.extend_from_slice(&T::TYPE.oid().to_be_bytes());
        for word in [count, 1] {
            array.extend_from_slice(&word.to_be_bytes()); // length, lower bound
        }
        for element in elements {
            match element.size() {
                Some(size) => {
                    array.extend_from_slice(&i32::try_from(size)?.to_be_bytes());
                    element.put(&mut array);
                }
                None => array.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out.put_slice(&array);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Array(member) if *member == T::TYPE)
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both<T: Element + ToSql + Clone>(values: &[T], ty: &Type) {
        let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
        Array(values).to_sql_checked(ty, &mut ours).expect("ours");
        values
            .to_vec()
            .to_sql_checked(ty, &mut theirs)
            .expect("theirs");
        assert_eq!(ours, theirs, "{values:?}");
    }

    #[test]
    fn the_bytes_are_tokio_postgres_own() {
        both::<&str>(&["req-1", "", "é雪"], &Type::TEXT_ARRAY);
        both::<&str>(&[], &Type::TEXT_ARRAY);
        both(&[Some("a"), None, Some("")], &Type::TEXT_ARRAY);
        both(&[1i64, -1, i64::MAX], &Type::INT8_ARRAY);
        both(&[Some(7i64), None], &Type::INT8_ARRAY);
        both(&[0.25f64, -0.0, 1e-12], &Type::FLOAT8_ARRAY);
        both(&[true, false], &Type::BOOL_ARRAY);
    }

    #[test]
    fn only_arrays_of_the_element_type_are_accepted() {
        assert!(<Array<'_, &str> as ToSql>::accepts(&Type::TEXT_ARRAY));
        assert!(!<Array<'_, &str> as ToSql>::accepts(&Type::TEXT));
        assert!(!<Array<'_, i64> as ToSql>::accepts(&Type::TEXT_ARRAY));
        let mut out = BytesMut::new();
        assert!(Array::<i64>(&[1])
            .to_sql_checked(&Type::TEXT_ARRAY, &mut out)
            .is_err());
    }
}
