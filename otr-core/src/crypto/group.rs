//! The 1536-bit MODP group of RFC 3526 (group 5), generator 2, in which OTR's Diffie-Hellman
//! and the Socialist Millionaires' Protocol compute.
//!
//! Exponentiation uses crypto-bigint's constant-time Montgomery arithmetic with an exponent
//! bound that depends only on public sizes, never on the secret's value.

use std::sync::OnceLock;

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Choice, CtAssign, MontyForm, MontyMultiplier, NonZero, Odd, Resize};
use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::CryptoError;
use crate::wire::Writer;

/// Bits of the modulus.
pub const MODULUS_BITS: u32 = 1536;
/// Bytes of the modulus.
pub const MODULUS_BYTES: usize = 192;

const P_HEX: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA237327FFFFFFFFFFFFFFFF";

/// Exponent bound of the smaller generator comb: DH secrets (320 bits) and hash challenges.
const DH_COMB_BITS: u32 = 320;
/// Teeth of a comb: a table of 2^TEETH powers of g (12 KiB at 1536 bits).
const COMB_TEETH: u32 = 6;

/// A Lim–Lee fixed-base comb for g: with the exponent's bits arranged in [`COMB_TEETH`] rows
/// of `spacing` bits, g^e costs `spacing` squarings and multiplications (instead of one
/// squaring per exponent bit plus a multiplication per 4 bits). Each step picks its table
/// entry by reading every entry and keeping one with a constant-time select, so neither the
/// memory accesses nor the branches depend on the exponent.
struct Comb {
    spacing: u32,
    /// `table[j]` = product of g^(2^(i * spacing)) over the bits i set in j.
    table: Vec<BoxedMontyForm>,
}

impl Comb {
    fn new(g: &BoxedMontyForm, bits: u32) -> Self {
        let spacing = bits.div_ceil(COMB_TEETH);
        let mut rows = Vec::with_capacity(COMB_TEETH as usize);
        let mut b = g.clone();
        for _ in 0..COMB_TEETH {
            let next = (0..spacing).fold(b.clone(), |x, _| x.square());
            rows.push(core::mem::replace(&mut b, next));
        }
        let mut table = vec![BoxedMontyForm::one(g.params())];
        for row in &rows {
            let upper: Vec<_> = table.iter().map(|t| t.mul(row)).collect();
            table.extend(upper);
        }
        Self { spacing, table }
    }

    /// g^e for an `e` of at most `COMB_TEETH * spacing` bits.
    fn pow(&self, e: &BoxedUint) -> BoxedMontyForm {
        let words = e.as_words();
        let bit = |i: u32| -> u32 {
            let w = words.get((i / 64) as usize).copied().unwrap_or(0);
            ((w >> (i % 64)) & 1) as u32
        };
        let params = self.table[0].params();
        let mut mul = <BoxedMontyForm as MontyForm>::Multiplier::from(params);
        let mut acc = BoxedMontyForm::one(params);
        let mut entry = acc.clone();
        for k in (0..self.spacing).rev() {
            mul.square_assign(&mut acc);
            let idx = (0..COMB_TEETH).fold(0, |j, i| j | (bit(i * self.spacing + k) << i));
            let picked = entry.as_montgomery_mut();
            picked.as_mut_words().fill(0);
            for (j, t) in (0u32..).zip(&self.table) {
                picked.ct_assign(t.as_montgomery(), Choice::from_u32_eq(j, idx));
            }
            mul.mul_assign(&mut acc, &entry);
        }
        entry.as_montgomery_mut().zeroize();
        acc
    }
}

struct Consts {
    #[cfg(any(test, feature = "internals"))]
    p: Odd<BoxedUint>,
    p_minus_1: BoxedUint,
    p_minus_1_bytes: Box<[u8]>,
    two: BoxedUint,
    q: NonZero<BoxedUint>,
    params: BoxedMontyParams,
    g: BoxedMontyForm,
    comb_dh: OnceLock<Comb>,
    comb_full: OnceLock<Comb>,
}

fn consts() -> &'static Consts {
    static C: OnceLock<Consts> = OnceLock::new();
    C.get_or_init(|| {
        let bytes: Vec<u8> = (0..P_HEX.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&P_HEX[i..i + 2], 16).expect("constant hex"))
            .collect();
        let p = BoxedUint::from_be_slice(&bytes, MODULUS_BITS).expect("constant fits");
        let p = Odd::new(p).expect("the RFC 3526 prime is odd");
        let p_minus_1 = p.wrapping_sub(BoxedUint::one_with_precision(MODULUS_BITS));
        let q = NonZero::new(p_minus_1.shr(1)).expect("(p-1)/2 is not zero");
        let params = BoxedMontyParams::new_vartime(p.clone());
        let two = BoxedUint::from_be_slice(&[2], MODULUS_BITS).expect("fits");
        let g = BoxedMontyForm::new(two.clone(), &params);
        let p_minus_1_bytes = p_minus_1.to_be_bytes();
        let (comb_dh, comb_full) = (OnceLock::new(), OnceLock::new());
        Consts {
            #[cfg(any(test, feature = "internals"))]
            p,
            p_minus_1, p_minus_1_bytes, two, q, params, g, comb_dh, comb_full }
    })
}

/// The prime modulus p (tests build out-of-range values from it).
#[cfg(any(test, feature = "internals"))]
pub fn modulus() -> &'static Odd<BoxedUint> {
    &consts().p
}

/// The order q = (p-1)/2 of the subgroup generated by 2.
pub fn order() -> &'static NonZero<BoxedUint> {
    &consts().q
}

/// A secret exponent, zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Exponent {
    value: BoxedUint,
    bits: u32,
}

impl Exponent {
    /// A uniformly random exponent of `bits` bits (a multiple of 8).
    pub fn random(bits: u32, rng: &mut (impl CryptoRng + ?Sized)) -> Self {
        let mut buf = vec![0u8; bits.div_ceil(8) as usize];
        rng.fill_bytes(&mut buf);
        let value = BoxedUint::from_be_slice(&buf, bits).expect("sized to fit");
        buf.zeroize();
        Self { value, bits }
    }

    /// The exponent's value.
    #[cfg(any(test, feature = "internals"))]
    pub fn value(&self) -> &BoxedUint {
        &self.value
    }

    /// The big-endian bytes of the exponent (fixed width).
    pub fn to_be_bytes(&self) -> Box<[u8]> {
        self.value.to_be_bytes()
    }

    /// An exponent from big-endian bytes, not reduced. Exponentiation is bounded by
    /// `8 * bytes.len()` bits, so only the length (never the value) shows in the timing.
    /// SMP uses this for its 32-byte secret digest and for hash challenges.
    pub fn from_be_bytes(bytes: &[u8]) -> Self {
        let bits = u32::try_from(bytes.len()).ok().and_then(|n| n.checked_mul(8)).unwrap_or(u32::MAX).max(8);
        Self { value: BoxedUint::from_be_slice_truncated(bytes, bits), bits }
    }

    /// A public exponent that must lie in `1 ..= q-1`, as the responses of SMP's
    /// zero-knowledge proofs must (libotr's `check_expon`); `None` when out of range.
    /// Exponentiation is bounded by [`MODULUS_BITS`].
    pub fn from_be_bytes_nonzero_below_q(bytes: &[u8]) -> Option<Self> {
        let value = BoxedUint::from_be_slice(bytes, MODULUS_BITS).ok()?;
        if bool::from(value.is_zero()) || value >= **order() {
            return None;
        }
        Some(Self { value, bits: MODULUS_BITS })
    }

    /// `(self - x * c) mod q`: the response of a Schnorr-style proof of knowledge, where `self`
    /// is the random commitment exponent, `x` the secret and `c` the challenge.
    ///
    /// Constant-time in all three values (the divisions are by the public q). The inputs need
    /// not be reduced but must fit in [`MODULUS_BITS`] bits.
    pub fn sub_mul_mod_q(&self, x: &Self, c: &Self) -> Self {
        let q = order();
        let mut r = (&self.value).resize_unchecked(MODULUS_BITS);
        let mut x = (&x.value).resize_unchecked(MODULUS_BITS);
        let mut c = (&c.value).resize_unchecked(MODULUS_BITS);
        let mut r_red = r.rem(q);
        let mut x_red = x.rem(q);
        let mut c_red = c.rem(q);
        let mut xc = x_red.mul_mod(&c_red, q);
        let value = r_red.sub_mod(&xc, q);
        for v in [&mut r, &mut x, &mut c, &mut r_red, &mut x_red, &mut c_red, &mut xc] {
            v.zeroize();
        }
        Self { value, bits: MODULUS_BITS }
    }
}

/// A validated element of the group: an integer in `2 ..= p-2`. Wiped on drop: most elements
/// are public, but some are not (SMP's shared generators g2 and g3, results of `pow_elem`).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Element {
    value: BoxedUint,
}

impl core::fmt::Debug for Element {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let b = self.to_bytes();
        write!(f, "Element({:02x}{:02x}..; {} bytes)", b[0], b.get(1).copied().unwrap_or(0), b.len())
    }
}

impl Element {
    /// Parses the big-endian magnitude of an MPI and checks `2 <= v <= p-2`.
    ///
    /// # Errors
    /// [`CryptoError::BadGroupElement`] when out of range (0, 1, p-1, p or larger).
    pub fn from_bytes(magnitude: &[u8]) -> Result<Self, CryptoError> {
        Self::check_bytes(magnitude)?;
        Ok(Self::from_checked_bytes(magnitude))
    }

    /// The range check of [`Self::from_bytes`] alone, without building the integer. It works
    /// on the bytes themselves (the value is public): every data message carries one of
    /// these, and comparing bytes is cheaper than comparing big integers.
    ///
    /// # Errors
    /// [`CryptoError::BadGroupElement`] when out of range.
    pub fn check_bytes(magnitude: &[u8]) -> Result<(), CryptoError> {
        let start = magnitude.iter().position(|&b| b != 0).unwrap_or(magnitude.len());
        let m = &magnitude[start..];
        let in_range = match m.len() {
            0 => false,
            1 => m[0] >= 2,
            MODULUS_BYTES => m < &consts().p_minus_1_bytes[..],
            n => n < MODULUS_BYTES,
        };
        if in_range { Ok(()) } else { Err(CryptoError::BadGroupElement) }
    }

    /// An element from bytes that passed [`Self::check_bytes`] (so they fit the modulus).
    pub(crate) fn from_checked_bytes(magnitude: &[u8]) -> Self {
        Self { value: BoxedUint::from_be_slice_truncated(magnitude, MODULUS_BITS) }
    }

    /// g^e, with a precomputed comb for the exponent sizes OTR uses (DH keys, SMP), else
    /// the generic exponentiation. Both are constant-time in the value of `e`.
    pub fn generator_pow(e: &Exponent) -> Self {
        let c = consts();
        let comb = if e.bits <= DH_COMB_BITS {
            Some(c.comb_dh.get_or_init(|| Comb::new(&c.g, DH_COMB_BITS)))
        } else if e.bits <= MODULUS_BITS {
            Some(c.comb_full.get_or_init(|| Comb::new(&c.g, MODULUS_BITS)))
        } else {
            None
        };
        let v = match comb {
            Some(comb) => comb.pow(&e.value),
            None => c.g.pow_bounded_exp(&e.value, e.bits),
        };
        Self { value: Zeroizing::new(v).retrieve() }
    }

    /// self^e (a shared secret when e is ours and self is theirs). The Montgomery form of the
    /// result is wiped; the caller owns (and wipes) the returned value.
    pub fn pow(&self, e: &Exponent) -> BoxedUint {
        Zeroizing::new(self.form().pow_bounded_exp(&e.value, e.bits)).retrieve()
    }

    /// The element in Montgomery form, wiped on drop.
    fn form(&self) -> Zeroizing<BoxedMontyForm> {
        Zeroizing::new(BoxedMontyForm::new(self.value.clone(), &consts().params))
    }

    /// self^e as an element, for SMP. Returns an error if the result is degenerate.
    ///
    /// # Errors
    /// [`CryptoError::BadGroupElement`] if the result is 0, 1 or p-1.
    pub fn pow_elem(&self, e: &Exponent) -> Result<Self, CryptoError> {
        Self::checked(self.pow(e))
    }

    /// self * other mod p.
    ///
    /// # Errors
    /// [`CryptoError::BadGroupElement`] if the product is degenerate.
    pub fn mul(&self, other: &Self) -> Result<Self, CryptoError> {
        Self::checked(Zeroizing::new(self.form().mul(&other.form())).retrieve())
    }

    /// self^-1 mod p.
    ///
    /// # Errors
    /// [`CryptoError::BadGroupElement`] never in practice: every element in range is invertible.
    pub fn invert(&self) -> Result<Self, CryptoError> {
        let inv = Option::<BoxedMontyForm>::from(self.form().invert()).ok_or(CryptoError::BadGroupElement)?;
        Self::checked(Zeroizing::new(inv).retrieve())
    }

    /// `value` as an element if in range; wiped if not.
    fn checked(mut value: BoxedUint) -> Result<Self, CryptoError> {
        let c = consts();
        if value < c.two || value >= c.p_minus_1 {
            value.zeroize();
            return Err(CryptoError::BadGroupElement);
        }
        Ok(Self { value })
    }

    /// Minimal big-endian magnitude.
    pub fn to_bytes(&self) -> Vec<u8> {
        minimal_be(&self.value)
    }

    /// The value as an OTR MPI (with length).
    pub fn to_mpi(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.mpi(&self.value.to_be_bytes());
        w.into_vec()
    }

    /// The raw value.
    pub fn value(&self) -> &BoxedUint {
        &self.value
    }
}

/// The minimal big-endian bytes of `v` (empty for zero). The full-width copy made on the way
/// is wiped (`v` may be secret: a DSA private key).
pub fn minimal_be(v: &BoxedUint) -> Vec<u8> {
    let full = Zeroizing::new(v.to_be_bytes());
    let start = full.iter().position(|&b| b != 0).unwrap_or(full.len());
    full[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};

    #[test]
    fn range_checks() {
        assert!(Element::from_bytes(&[]).is_err());
        assert!(Element::from_bytes(&[1]).is_err());
        assert!(Element::from_bytes(&[2]).is_ok());
        let p = modulus().to_be_bytes();
        assert!(Element::from_bytes(&p).is_err());
        let mut pm1 = p.to_vec();
        *pm1.last_mut().unwrap() -= 1;
        assert!(Element::from_bytes(&pm1).is_err());
        let mut pm2 = p.to_vec();
        *pm2.last_mut().unwrap() -= 2;
        assert!(Element::from_bytes(&pm2).is_ok());
        assert!(Element::from_bytes(&[1; 193]).is_err());
        assert!(Element::from_bytes(&[0, 0, 2]).is_ok(), "leading zeros do not count");
        assert!(Element::from_bytes(&[0, 1]).is_err());
        assert!(Element::from_bytes(&[0xff; 191]).is_ok());
        // The byte-level check agrees with the big-integer one around every boundary.
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut cases: Vec<Vec<u8>> = vec![p.to_vec(), pm1, pm2, vec![0xff; 192], vec![2], vec![0, 0]];
        for _ in 0..200 {
            let mut v = p.to_vec();
            let i = (rng.next_u32() % 192) as usize;
            v[i] = v[i].wrapping_add((rng.next_u32() % 3) as u8).wrapping_sub(1);
            cases.push(v);
        }
        for c in cases {
            let big = BoxedUint::from_be_slice(&c, MODULUS_BITS).ok().map(Element::checked);
            let fast = Element::from_bytes(&c);
            assert_eq!(fast.is_ok(), big.is_some_and(|b| b.is_ok()), "{c:02x?}");
        }
    }

    #[test]
    fn proof_response_mod_q() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let r = Exponent::random(MODULUS_BITS, &mut rng);
        let x = Exponent::random(MODULUS_BITS, &mut rng);
        let c = Exponent::from_be_bytes(&[0xff; 32]);
        let d = r.sub_mul_mod_q(&x, &c);
        assert!(d.value() < order().as_ref());
        // g^d * (g^x)^c == g^r
        let gx = Element::generator_pow(&x);
        let lhs = Element::generator_pow(&d).mul(&gx.pow_elem(&c).unwrap()).unwrap();
        assert_eq!(lhs, Element::generator_pow(&r));
        assert!(Exponent::from_be_bytes_nonzero_below_q(&[]).is_none());
        assert!(Exponent::from_be_bytes_nonzero_below_q(&order().to_be_bytes()).is_none());
        assert!(Exponent::from_be_bytes_nonzero_below_q(&[1]).is_some());
    }

    #[test]
    fn generator_comb_matches_plain_exponentiation() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let g = &consts().g;
        let mut exps: Vec<Exponent> = [8, 160, 256, 320, 328, 1024, 1536]
            .into_iter()
            .map(|bits| Exponent::random(bits, &mut rng))
            .collect();
        exps.push(Exponent::from_be_bytes(&[0xff; 40]));
        exps.push(Exponent::from_be_bytes(&[0; 40]));
        exps.push(Exponent::from_be_bytes(&[0xff; 192]));
        exps.push(Exponent::from_be_bytes(&[0x80; 200]));
        for e in exps {
            let plain = g.pow_bounded_exp(&e.value, e.bits).retrieve();
            assert_eq!(Element::generator_pow(&e).value, plain, "{} bits", e.bits);
        }
    }

    #[test]
    fn dh_agrees() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let a = Exponent::random(320, &mut rng);
        let b = Exponent::random(320, &mut rng);
        let ga = Element::generator_pow(&a);
        let gb = Element::generator_pow(&b);
        assert_eq!(gb.pow(&a), ga.pow(&b));
        let inv = ga.invert().unwrap();
        let one = ga.mul(&inv);
        assert!(one.is_err(), "1 is rejected as a degenerate element");
    }
}
