pub mod odf;
