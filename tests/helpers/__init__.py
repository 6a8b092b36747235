"""Helper modules for the tests (servers, stand-ins, fakes and scripts they start); no tests live here."""
