# SPDX-License-Identifier: MIT
# The CBLAS relpos's products call when built with RELPOS_BLAS (include/relpos/detail/gemm.hpp):
# defines relpos::cblas, the library FindBLAS found (BLAS::BLAS, found before this file is
# included) plus the folder of its cblas.h, which FindBLAS does not look for. Included by the
# build and by the installed relposConfig.cmake, so both find the header the same way.
if(NOT TARGET relpos::cblas)
  # OpenBLAS and BLIS install cblas.h under a folder of their own on some systems; Debian puts
  # the selected one on the default path (/usr/include/<multiarch>/cblas.h).
  find_path(RELPOS_CBLAS_INCLUDE_DIR cblas.h
    PATH_SUFFIXES openblas openblas-pthread x86_64-linux-gnu/openblas-pthread blis
    DOC "Folder of the cblas.h of the BLAS given by RELPOS_BLAS")
  if(RELPOS_CBLAS_INCLUDE_DIR AND TARGET BLAS::BLAS)
    add_library(relpos::cblas INTERFACE IMPORTED)
    target_include_directories(relpos::cblas INTERFACE ${RELPOS_CBLAS_INCLUDE_DIR})
    target_link_libraries(relpos::cblas INTERFACE BLAS::BLAS)
  endif()
endif()
