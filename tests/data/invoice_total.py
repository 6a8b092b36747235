"""Totals for invoice lines: quantity times unit price, plus VAT."""

import sys


def line_total(line):
    quantity, unit_price = line["quantity"], line["unit_price"]
    return quantity * unit_price


def invoice_total(lines, vat_rate):
    net = sum(line_total(line) for line in lines)
    return round(net * (1 + vat_rate), 2)


def main():
    lines = [{"quantity": 40, "unit_price": 1.20}, {"quantity": 10, "unit_price": "2.50"}]
    print(invoice_total(lines, 0.19))


if __name__ == "__main__":
    sys.exit(main())
