// SPDX-License-Identifier: MIT
// The read-only bytes of a whole file, memory-mapped (POSIX mmap), or of an owned buffer:
// move-only, and the address of the bytes never changes, so views into them stay valid.
#pragma once

#include <cerrno>
#include <cstddef>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <relpos/core.hpp>

namespace relpos::detail {

class MappedBytes {
 public:
  MappedBytes() = default;
  explicit MappedBytes(std::vector<unsigned char> owned)
      : owned_(std::move(owned)), data_(owned_.data()), size_(owned_.size()) {}

  // Throws relpos::Error naming the path and the system's reason.
  static MappedBytes map_file(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(path + ": cannot open: " + std::generic_category().message(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      throw Error(path + ": cannot stat: " + std::generic_category().message(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      throw Error(path + ": not a regular file");
    }
    MappedBytes out;
    const auto size = static_cast<std::size_t>(st.st_size);
    if (size > 0) {  // mmap of length 0 is an error; an empty file is simply no bytes
      void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        throw Error(path + ": cannot map: " + std::generic_category().message(err));
      }
      out.map_ = p;
      out.data_ = static_cast<const unsigned char*>(p);
      out.size_ = size;
    }
    ::close(fd);  // the mapping stays valid without the descriptor
    return out;
  }

  MappedBytes(MappedBytes&& other) noexcept { *this = std::move(other); }
  MappedBytes& operator=(MappedBytes&& other) noexcept {
    if (this != &other) {
      release();
      // moving a vector keeps its buffer, so data_ stays valid
      owned_ = std::move(other.owned_);
      map_ = std::exchange(other.map_, nullptr);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  MappedBytes(const MappedBytes&) = delete;
  MappedBytes& operator=(const MappedBytes&) = delete;
  ~MappedBytes() { release(); }

  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void release() noexcept {
    if (map_ != nullptr) ::munmap(map_, size_);
    map_ = nullptr;
    owned_.clear();
    data_ = nullptr;
    size_ = 0;
  }

  std::vector<unsigned char> owned_;
  void* map_ = nullptr;  // non-null when data_ is a mapping of size_ bytes
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace relpos::detail
