// SPDX-License-Identifier: MIT
// The version of relpos. This file is its one source: CMakeLists.txt reads these three lines
// for project(VERSION), so the CMake package, relpos.pc and the header always agree.
#pragma once

#define RELPOS_VERSION_MAJOR 0
#define RELPOS_VERSION_MINOR 1
#define RELPOS_VERSION_PATCH 0

namespace relpos {

/// major·10000 + minor·100 + patch, for comparisons: `static_assert(relpos::version >= 100)`.
inline constexpr int version =
    RELPOS_VERSION_MAJOR * 10000 + RELPOS_VERSION_MINOR * 100 + RELPOS_VERSION_PATCH;

}  // namespace relpos
