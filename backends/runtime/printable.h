// Error messages quote names and values read from a file, which may hold any bytes: a message is
// made printable ASCII (other bytes as \xNN) so that every consumer (a terminal, the CLI's
// one-line-per-file output, Python's str) can show it.
#pragma once

#include <string>

namespace fbck::rt {

inline std::string printable(const std::string& s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace fbck::rt
